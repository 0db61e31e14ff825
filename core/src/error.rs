//! Errors of the xfull engine.
//!
//! Rules: every variant names the thing that is wrong (a key, a path, a
//! name) so that the CLI can print it as is; callers branch on the variant,
//! never on message text. Damage to stored data is its own family of
//! variants (see [`Error::is_damage`]) because operators act on it
//! differently (exit status 3) from an unreachable store or a bad argument.
//! Messages include their cause's text, so variants carry no `#[source]`:
//! printing the chain would say it twice.

use std::path::PathBuf;

use crate::backend::BackendError;

/// The result type of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The storage backend failed (not found, unreachable, denied, ...).
    #[error(transparent)]
    Backend(#[from] BackendError),

    /// There is no repository at the location (no `config` object).
    #[error("no xfull repository at {location} (create one with `xfull init`)")]
    NotARepository { location: String },

    /// `init` found a repository already there.
    #[error("a repository already exists at {location}; refusing to overwrite it")]
    RepositoryExists { location: String },

    /// An object or repository uses a format this build does not know.
    #[error("{what} uses format {found}, this xfull supports {supported}; upgrade xfull")]
    UnsupportedFormat {
        what: String,
        found: String,
        supported: String,
    },

    /// A repository made by an older xfull whose format this build no
    /// longer reads (format 1: before encryption and packs).
    #[error(
        "{what} uses format {found}, this xfull reads only formats {supported}; use the xfull that made it, or back up into a new repository"
    )]
    OldFormat {
        what: String,
        found: u32,
        supported: String,
    },

    /// A stored object is damaged: bad frame, checksum or hash mismatch,
    /// undecodable content.
    #[error("damaged object {key}: {reason}")]
    Corrupt { key: String, reason: String },

    /// A stored object of another repository, read from by `copy`, is
    /// damaged. Its own variant (not a note in `key`), because a copy
    /// treats the source's damage differently from the target's: it may
    /// be a point pruned there meanwhile.
    #[error("damaged object {key} in the source {source_location}: {reason}")]
    SourceCorrupt {
        key: String,
        source_location: String,
        reason: String,
    },

    /// `copy` left out points damaged in the source and copied the
    /// others; `first` is the first of them, `reason` its damage.
    #[error(
        "{count} point(s) damaged in the source were not copied, {first} first: {reason}; the \
         others were. `xfull verify` the source, `xfull repair` it, then copy again"
    )]
    SourcePointsDamaged {
        count: usize,
        first: String,
        reason: String,
    },

    /// The manifest at a copied point's key in the target is damaged. The
    /// operator's `--repo` is the copy's source, so the hint names the
    /// target: `forget` run on `--repo` would delete the good point. It
    /// names `--to`, not the location as a URL: an S3 location with an
    /// endpoint is no `-r` argument (review 103).
    #[error(
        "damaged point {point} in the target {target_location}: {reason}; a copy never \
         replaces it: run `xfull forget {point}` on the target (the repository given to \
         --to, not the source), then copy again"
    )]
    TargetPointDamaged {
        point: String,
        target_location: String,
        reason: String,
    },

    /// Restoring or reading a point met damaged or missing data.
    #[error(
        "point {point}, disk {disk}: damaged data at offset {offset} (chunk {chunk}): {reason}"
    )]
    Damaged {
        point: String,
        disk: String,
        offset: u64,
        chunk: String,
        reason: String,
    },

    /// Restoring a point could not read what it needs for a reason other
    /// than damage (the store failed or refused, the object sits in an
    /// archive tier): the data may well be intact, so this is not damage.
    #[error(
        "point {point}, disk {disk}: cannot read the data at offset {offset} ({object}): {reason}"
    )]
    Unreadable {
        point: String,
        disk: String,
        offset: u64,
        object: String,
        reason: String,
    },

    /// `restore --wait` gave up: what the restore needs is not being
    /// thawed, or its thaw did not finish in time.
    #[error(
        "point {point}, disk {disk}: {objects} objects ({bytes} bytes) it needs are in an \
         archive storage class and {reason}"
    )]
    NotThawed {
        point: String,
        disk: String,
        objects: u64,
        bytes: u64,
        reason: String,
    },

    /// A restore met chunk data in an archive storage class with no
    /// readable copy (not damage: thawing it makes it readable).
    #[error(
        "point {point}, disk {disk}: cannot read the data at offset {offset} ({object}): \
         {reason}; `xfull restore --plan` lists what the restore needs from the archive, \
         `xfull thaw` asks the store for it"
    )]
    Archived {
        point: String,
        disk: String,
        offset: u64,
        object: String,
        /// The store's words, naming the archived object (a pack).
        reason: String,
    },

    /// A restore told to go on past damage wrote zeros for damaged or
    /// missing data (its outcome lists the ranges).
    #[error(
        "point {point}, disk {disk}: {ranges} damaged range(s), {bytes} bytes in all, restored as zeros"
    )]
    DamageIgnored {
        point: String,
        disk: String,
        ranges: usize,
        bytes: u64,
    },

    /// A gc (or prune's) sweep deleted and rewrote no pack because an
    /// index object does not read; `held` says which and what to do.
    #[error("gc held back every pack: {held}")]
    SweepHeldByDamage { held: String },

    /// A sweep deleted and rewrote no pack because the store's listing
    /// left out a pack that is there; `held` says which.
    #[error("gc held back every pack: {held}")]
    SweepHeldByStore { held: String },

    /// `verify` found damaged points (the report lists them).
    #[error("verify found {points} damaged point(s)")]
    DamageFound { points: usize },

    /// `verify` found index entries their packs contradict, or packs or
    /// index objects that cannot be read (the report names them).
    #[error("verify found {problems} index entries or packs in disagreement or unreadable")]
    IndexDamaged { problems: u64 },

    /// A VM, disk, label or point name breaks the naming rules.
    #[error("invalid {kind} {name:?}: {reason}")]
    InvalidName {
        kind: &'static str,
        name: String,
        reason: String,
    },

    /// A command argument is not acceptable.
    #[error("{0}")]
    InvalidArgument(String),

    /// The point does not exist.
    #[error("no point {point} in the repository")]
    PointNotFound { point: String },

    /// The point was removed (a prune or `forget`, and the gc after it)
    /// while it was being read: what it referenced went with it, which is
    /// not damage.
    #[error(
        "point {point} was removed (pruned or forgotten) while it was being read, and what \
         could not be read went with it: read another point"
    )]
    PointRemoved { point: String },

    /// The point has no disk of that name.
    #[error("point {point} has no disk {disk:?} (it has: {available})")]
    DiskNotFound {
        point: String,
        disk: String,
        available: String,
    },

    /// The source disk could not be opened or read.
    #[error("source disk {}: {error}", path.display())]
    Source {
        path: PathBuf,
        error: std::io::Error,
    },

    /// The restore target could not be created or written.
    #[error("restore target {}: {error}", path.display())]
    Target {
        path: PathBuf,
        error: std::io::Error,
    },

    /// Local files of marks or prints (gc's chunk marks, verify's trailer
    /// prints, spilled when they outgrow their memory budget) could not
    /// be created, written or read.
    #[error("local mark files in {}: {error}", path.display())]
    MarkFiles {
        path: PathBuf,
        error: std::io::Error,
    },

    /// The overlay file of a writable served disk cannot be used.
    #[error("overlay {}: {reason}", path.display())]
    Overlay { path: PathBuf, reason: String },

    /// The hypervisor (QEMU over QMP) refused or failed what a backup
    /// needs from it.
    #[error("QEMU at {socket}: {message}")]
    Hypervisor { socket: String, message: String },

    /// The source disk changed while it was backed up, and what the point
    /// needs can no longer be read from it. Not the caller's argument (the
    /// command was right) and not damage to stored data: exit status 1.
    #[error(
        "source disk {} changed while it was backed up (segment at offset {offset}): {reason}",
        path.display()
    )]
    SourceChanged {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// A change source (extent file, snapshot image) cannot be trusted.
    #[error("change file {file}{}: {reason}", entry.map(|i| format!(", entry {i}")).unwrap_or_default())]
    ChangeSource {
        file: String,
        entry: Option<usize>,
        reason: String,
    },

    /// The audit found data the change source did not report (handled
    /// inside the backup, which falls back to a full scan).
    #[error("the change source missed a change in the segment at offset {offset}")]
    AuditMismatch { offset: u64 },

    /// A sweep stopped before deleting more, to stay safe (it could not
    /// keep its marker fresh, or found damage it cannot mark around).
    #[error("gc sweep {seq} stopped before deleting anything more: {reason}")]
    SweepStopped {
        seq: u64,
        reason: String,
        /// Stopped because stored data is damaged (exit status 3).
        damage: bool,
    },

    /// A server's or mount's lease on the points it serves went unrefreshed
    /// long enough that gc may take it for dead and delete their data: it
    /// stopped serving (exit status 1) rather than rewrite the lease.
    #[error(
        "lease {lease}: no refresh of it reached the store for {since_secs} s (the lease TTL is \
         {ttl_secs} s), so gc may delete the served points' data; stopped serving rather than \
         renew it. Check the store, then start again"
    )]
    LeaseLapsed {
        lease: String,
        since_secs: u64,
        ttl_secs: u64,
    },

    /// A gc sweep is running, and the operation needs to be the only one.
    #[error(
        "gc sweep {seq} is running on {host}; one sweep runs at a time: try again when it is done"
    )]
    SweepBusy { seq: u64, host: String },

    /// The operation was asked to stop (Ctrl-C, SIGTERM) and stopped
    /// cleanly; `cleaned` says what it undid (exit status 130 in the CLI).
    #[error("interrupted: {cleaned}")]
    Cancelled { cleaned: String },

    /// A background task died unexpectedly (a bug, or the runtime shut down).
    #[error("internal error: {0}")]
    Internal(String),

    /// No key slot of the repository opens with the secret given (a wrong
    /// password or key file); `secret` says which and where it came from.
    #[error("no key slot of the repository at {location} opens with the {secret}")]
    WrongSecret { location: String, secret: String },

    /// The password or key file could not be had from where it was asked
    /// for (a missing file, a failing command, no terminal).
    #[error("cannot read the {secret}: {reason}")]
    SecretSource { secret: String, reason: String },

    /// The repository was opened with a backup-only key and the operation
    /// needs a full-access key (reading chunk data, managing keys).
    #[error("{operation} needs a full-access key; this key (slot {slot}) is backup-only")]
    MissingCapability { operation: String, slot: String },

    /// `key remove` asked for a slot that is not there.
    #[error("no key slot {slot} in the repository at {location}")]
    KeySlotNotFound { location: String, slot: String },

    /// `key add` / `key passwd` was given a new secret that already opens
    /// a slot: it would add no secret, only (maybe) another access.
    #[error("the new {secret} already opens key slot {slot}: choose another")]
    SecretInUse { secret: String, slot: String },

    /// Removing this slot would leave no full-access key: nobody could
    /// restore, and the data would be lost for good.
    #[error(
        "refusing to remove key slot {slot}: it is the last full-access key slot of the \
         repository (add another one first)"
    )]
    LastFullKeySlot { slot: String },

    /// Another removal ran at the same time, and after this one's delete
    /// no full-access slot was left: the slot was put back.
    #[error(
        "key slot {slot} was put back: another key removal ran at the same time, and without \
         it the repository would have had no full-access key slot left; check `xfull key list` \
         and remove again if still wanted"
    )]
    KeyRemovalRaced { slot: String },

    /// Object lock: this machine's clock is too far behind the store's to
    /// lock what it writes for the whole lock period.
    #[error(
        "this machine's clock is {behind_secs} s behind the clock of the store at {location}, \
         more than the repository's clock margin ({margin_secs} s): with object lock, \
         retention would be shorter than the lock period; set the clock right (NTP) and run \
         the command again"
    )]
    ClockBehind {
        location: String,
        behind_secs: i64,
        margin_secs: u64,
    },

    /// The VM's newest point is dated further ahead of this machine's
    /// clock than the clock margin: a point made now would sort before
    /// it (see `backup/commit.rs`, `point_time`).
    #[error(
        "the VM's newest point {point} is dated {ahead_secs} s ahead of this machine's clock, \
         more than the repository's clock margin ({margin_secs} s): a point made now would \
         sort before it, and the next incremental backup would build on the wrong point. If \
         that point's time is right, this machine's clock is behind: set it right (NTP). If \
         it is wrong, remove the point (`xfull forget {point}`) or date this one after it \
         (--time later than it, with --allow-future)"
    )]
    NewestPointAhead {
        point: String,
        ahead_secs: i64,
        margin_secs: u64,
    },

    /// This client's record of repositories seen encrypted or locked
    /// (client_record.rs) cannot be read or written: the downgrade check
    /// cannot be made, so the command stops rather than pass silently.
    #[error("client record {}: {reason}", path.display())]
    ClientRecord { path: PathBuf, reason: String },

    /// `copy` was given a target that does not name and seal content as
    /// its source does (it was not made with `init --like`): the same data
    /// has other ids there, so nothing could be moved verbatim.
    #[error(
        "{target} was not made with `xfull init --like {from}` ({reason}): the same data has \
         other ids there, so nothing can be copied as stored; make the copy's target with \
         `xfull init --like`"
    )]
    NotLike {
        from: String,
        target: String,
        reason: String,
    },

    /// `init`'s config put failed in a way that may have stored it (a lost
    /// reply), and the config could not be read back to tell: the
    /// repository may exist, so its first key slot was kept, and the
    /// secret that opens it must be too.
    #[error(
        "init at {location} cannot tell whether the repository was made ({reason}): the \
         repository may have been created; its key slot was kept, and the same password or \
         key file opens it if so (try `xfull points`)"
    )]
    InitOutcomeUnknown { location: String, reason: String },

    /// `init` found key slots and no config: an encrypted init failed
    /// before its config, or is running now. Neither a plain config (it
    /// would read as a downgrade) nor new master keys can go beside them.
    #[error(
        "{location}: keys/ holds key slots but there is no config: an earlier init failed or \
         another is running; if none is, delete keys/ and run init again"
    )]
    KeysExist { location: String },
}

impl Error {
    /// True when the error reports damaged or missing stored data.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            Error::Corrupt { .. }
                | Error::SourceCorrupt { .. }
                | Error::SourcePointsDamaged { .. }
                | Error::TargetPointDamaged { .. }
                | Error::Backend(BackendError::Corrupt { .. })
                | Error::Damaged { .. }
                | Error::DamageIgnored { .. }
                | Error::DamageFound { .. }
                | Error::SweepHeldByDamage { .. }
                | Error::IndexDamaged { .. }
                | Error::SweepStopped { damage: true, .. }
        )
    }

    /// True when the store refused a read because the object is in an
    /// archive storage class or tier with no readable copy (S3's 403
    /// InvalidObjectState): not damage, and a thaw would make it readable.
    pub fn is_archived(&self) -> bool {
        matches!(self, Error::Backend(BackendError::Archived { .. }))
    }

    /// True when the error is the caller's input (exit status 2 in the
    /// CLI): a bad name or argument, or a change file that cannot be used.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::InvalidName { .. } | Error::InvalidArgument(_) | Error::ChangeSource { .. }
        )
    }

    pub(crate) fn corrupt(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            key: key.into(),
            reason: reason.into(),
        }
    }
}
