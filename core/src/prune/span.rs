//! Durations for `--keep-within`: `1y2m3w4d5h` (years, months, weeks,
//! days, hours; months and years are calendar ones, as in restic).

use chrono::{DateTime, Months, Utc};
use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Span {
    pub years: u32,
    pub months: u32,
    pub weeks: u32,
    pub days: u32,
    pub hours: u32,
}

impl Span {
    pub fn parse(s: &str) -> Result<Span, String> {
        let bad = |why: &str| format!("invalid duration {s:?}: {why} (e.g. 7d, 2w, 1y6m, 36h)");
        let mut span = Span::default();
        let mut digits = String::new();
        let mut any = false;
        for c in s.trim().chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            if digits.is_empty() {
                return Err(bad("a number must come before each unit"));
            }
            let n: u32 = digits.parse().map_err(|_| bad("too large"))?;
            digits.clear();
            let slot = match c {
                'y' => &mut span.years,
                'm' => &mut span.months,
                'w' => &mut span.weeks,
                'd' => &mut span.days,
                'h' => &mut span.hours,
                _ => return Err(bad(&format!("unknown unit {c:?}"))),
            };
            *slot = slot.checked_add(n).ok_or_else(|| bad("too large"))?;
            any = true;
        }
        if !digits.is_empty() {
            return Err(bad("a number needs a unit"));
        }
        if !any {
            return Err(bad("empty"));
        }
        if span.years > 1000
            || span.months > 12_000
            || span.weeks > 52_000
            || span.days > 365_000
            || span.hours > 8_760_000
        {
            return Err(bad("too large"));
        }
        // `0d` keeps no point by time: as a policy's only rule it removed
        // every point but the newest, though a policy without a rule is
        // refused (review, stop 56). restic takes it as no rule.
        if span == Span::default() {
            return Err(bad("a span of zero keeps nothing; leave --keep-within out"));
        }
        Ok(span)
    }

    /// `t` minus this span (calendar months and years).
    pub fn before(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let months = self.years * 12 + self.months;
        let t = t
            .checked_sub_months(Months::new(months))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let d = chrono::Duration::days(i64::from(self.weeks) * 7 + i64::from(self.days))
            + chrono::Duration::hours(i64::from(self.hours));
        t.checked_sub_signed(d).unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, u) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.weeks, 'w'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n > 0 {
                write!(f, "{n}{u}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn parses_and_subtracts_calendar_units() {
        let s = Span::parse("1y2m3d4h").unwrap();
        assert_eq!((s.years, s.months, s.days, s.hours), (1, 2, 3, 4));
        assert_eq!(s.to_string(), "1y2m3d4h");
        let t = Utc.with_ymd_and_hms(2026, 3, 31, 12, 0, 0).unwrap();
        // One calendar month before March 31 is February 28.
        assert_eq!(
            Span::parse("1m").unwrap().before(t),
            Utc.with_ymd_and_hms(2026, 2, 28, 12, 0, 0).unwrap()
        );
        assert_eq!(
            Span::parse("2w").unwrap().before(t),
            Utc.with_ymd_and_hms(2026, 3, 17, 12, 0, 0).unwrap()
        );
        for bad in [
            "",
            "7",
            "d",
            "3x",
            "-1d",
            "99999999999d",
            "1.5d",
            "0d",
            "0y0h",
        ] {
            assert!(Span::parse(bad).is_err(), "{bad}");
        }
        let e = Span::parse("99999999999d").unwrap_err();
        assert!(e.contains("too large"), "{e}");
        let e = Span::parse("9999999h").unwrap_err();
        assert!(e.contains("too large"), "{e}");
    }
}
