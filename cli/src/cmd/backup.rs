use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use xfull_core::Error;
use xfull_core::backup::plan::{BitmapRef, ChangeSource};
use xfull_core::backup::qmp::{QMP_DISK, QmpSource, backup_with_qmp};
use xfull_core::backup::{BackupRequest, backup};
use xfull_core::id::PointId;
use xfull_core::manifest::limits::{MAX_DISKS, MAX_LABELS};
use xfull_core::names::{DiskName, HostName, LabelKey, LabelValue, VmName};
use xfull_core::repo::Repository;

use crate::cli::{BackupArgs, Cli, split_pair};
use crate::output::{PointView, StatsView, bytes, print_json, printable, stats_line};
use crate::progress_ui::Bar;

pub async fn run(cli: &Cli, args: &BackupArgs) -> Result<()> {
    let mut req = request(args)?;
    let repo = crate::open::open(cli).await?;
    if let Some(p) = &args.parent {
        req.parent = parent(&repo, &req.vm, p).await?;
    }
    let progress = crate::progress();
    let bar = Bar::start(progress.clone(), "backup", cli, true);
    let result = match &args.qmp {
        Some(socket) => {
            let q = QmpSource {
                socket: socket.clone(),
                nbd_socket: args.qmp_nbd_socket.clone(),
                work_dir: args
                    .qmp_work_dir
                    .clone()
                    .or_else(|| std::env::var_os("TMPDIR").map(PathBuf::from))
                    .unwrap_or_else(|| PathBuf::from("/var/tmp")),
            };
            backup_with_qmp(&repo, req, &q, progress.clone()).await
        }
        None => backup(&repo, req, progress.clone()).await,
    };
    drop(bar);
    let requests = repo.backend().request_counts();
    crate::metrics::record_requests("backup", requests.iter().map(|(k, v)| (*k, *v)));
    let m = result?;
    record_metrics(&m);
    let warnings = progress.warnings();
    for d in &m.disks {
        if let Some(at) = d.audit.as_ref().and_then(|a| a.mismatch_at) {
            say!(
                "xfull: WARNING: disk {}: the change source missed changed data at offset {at}; \
                 the disk was scanned in full. Check the change tracking of this disk.",
                d.name
            );
        }
    }
    if cli.json {
        let view = PointView::from(&m);
        return print_json(&serde_json::json!({
            "point": m.point_name(),
            "vm": view.vm,
            "id": view.id,
            "parent": view.parent,
            "time": view.time,
            "stats": StatsView::from(&m.stats),
            "requests": requests,
            "disks": view.disks,
            "warnings": warnings,
        }));
    }
    println!("point {}", m.point_name());
    if cli.quiet {
        return Ok(());
    }
    for d in &m.disks {
        println!(
            "  disk {} ({}): {}",
            d.name,
            bytes(d.size),
            stats_line(&d.stats)
        );
        println!("    source: {}", printable(&d.source));
        if let (true, Some(p)) = (cli.verbose, &d.parent) {
            println!("    based on {}@{p}", m.vm);
        }
    }
    println!("  total: {}", stats_line(&m.stats));
    if let Some(l) = &m.stats.lock {
        let until = m.disks.iter().filter_map(|d| d.lock_generation).max();
        println!(
            "  object lock: {} retentions read, {} extended{}{}",
            l.checked,
            l.extended,
            match l.disks_renewed {
                0 => String::new(),
                n => format!(" ({n} disks looked at whole: a new generation)"),
            },
            until.map_or(String::new(), |g| format!(", generation {g}"))
        );
    }
    if !requests.is_empty() {
        let list: Vec<String> = requests.iter().map(|(k, v)| format!("{v} {k}")).collect();
        println!("  requests: {}", list.join(", "));
    }
    Ok(())
}

/// `--parent`: `VM@ID` of the same VM, or an id (or a unique part of one).
/// `latest` is no parent given: the engine's own choice, with its checks
/// (`None`). Resolved here to the newest readable point, it passed over a
/// damaged point of the same second, and the engine took the older one
/// at its word: a change file made since the damaged point was applied
/// to it and the point restored wrong bytes (review, stop 51).
async fn parent(repo: &Repository, vm: &VmName, given: &str) -> Result<Option<PointId>> {
    let fragment = match given.split_once('@') {
        Some((pvm, id)) => {
            if pvm != vm.as_str() {
                return Err(Error::InvalidArgument(format!(
                    "--parent {given:?} is a point of VM {pvm:?}, not of {vm}: a backup \
                     deduplicates against its own VM's points"
                ))
                .into());
            }
            id
        }
        None => given,
    };
    if fragment == "latest" {
        if repo.list_points(Some(vm)).await?.is_empty() {
            return Err(Error::PointNotFound {
                point: format!("{vm}@latest (the VM has no points)"),
            }
            .into());
        }
        return Ok(None);
    }
    // A whole id needs no listing of the VM's points (one round trip and
    // a LIST fewer): its manifest is read after the lease, and one that is
    // not there fails then, naming the point.
    if let Some(id) = PointId::parse_whole(fragment) {
        return Ok(Some(id));
    }
    crate::point_name::find_id(repo, vm, fragment)
        .await
        .map(Some)
}

fn record_metrics(m: &xfull_core::manifest::Manifest) {
    use crate::metrics::record;
    let vm = m.vm.as_str();
    let s = &m.stats;
    for (kind, v) in [
        ("scanned", s.bytes_scanned),
        ("read", s.bytes_read),
        ("changed", s.bytes_changed),
        ("data", s.bytes_data),
        ("uploaded", s.bytes_uploaded),
        ("stored", s.bytes_stored),
    ] {
        record(
            "xfull_backup_bytes",
            &[("vm", vm), ("kind", kind)],
            v as f64,
        );
    }
    for (kind, v) in [
        ("new_chunks", s.new_chunks),
        ("new_nodes", s.new_nodes),
        ("restored", s.objects_restored),
    ] {
        record(
            "xfull_backup_objects",
            &[("vm", vm), ("kind", kind)],
            v as f64,
        );
    }
    let now = chrono::Utc::now().timestamp() as f64;
    record(
        "xfull_backup_last_success_timestamp_seconds",
        &[("vm", vm)],
        now,
    );
}

/// Validates the arguments into an engine request (nothing is opened yet).
fn request(args: &BackupArgs) -> Result<BackupRequest> {
    let vm = args.vm.parse()?;
    let disks = args
        .disks
        .iter()
        .map(|d| {
            let (name, path) = split_pair("--disk", d)?;
            if path.is_empty() {
                return Err(Error::InvalidArgument(format!("--disk {d:?} has no path")).into());
            }
            if path.starts_with(QMP_DISK) && args.qmp.is_none() {
                return Err(Error::InvalidArgument(format!(
                    "--disk {d:?} names a QEMU node: give the QMP socket with --qmp SOCKET"
                ))
                .into());
            }
            Ok((name.parse()?, PathBuf::from(path)))
        })
        .collect::<Result<Vec<_>>>()?;
    if disks.len() > MAX_DISKS {
        return Err(Error::InvalidArgument(format!(
            "{} disks given: a point holds at most {MAX_DISKS}",
            disks.len()
        ))
        .into());
    }
    // Labels and the host are printed by later commands: printable text
    // only (no escape sequences or line breaks), bounded in length.
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        let (k, v) = split_pair("--label", l)?;
        let key: LabelKey = k.parse()?;
        let value: LabelValue = v.parse()?;
        // A point holds one value per key: which one was meant?
        if labels.insert(key.to_string(), value.into()).is_some() {
            return Err(Error::InvalidArgument(format!(
                "label {key} is given twice: a point holds one value per label"
            ))
            .into());
        }
    }
    if labels.len() > MAX_LABELS {
        return Err(Error::InvalidArgument(format!(
            "{} labels given: a point holds at most {MAX_LABELS}",
            labels.len()
        ))
        .into());
    }
    let host: HostName = match &args.host {
        Some(h) => h.parse()?,
        None => xfull_core::host::name().parse()?,
    };
    let time = args
        .time
        .as_deref()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|e| {
                    Error::InvalidArgument(format!(
                        "--time {t:?} is not an RFC 3339 time (e.g. 2026-11-25T19:41:55Z): {e}"
                    ))
                })
        })
        .transpose()?;
    let mut changes: BTreeMap<DiskName, ChangeSource> = BTreeMap::new();
    for c in &args.changed {
        let (name, file) = split_pair("--changed", c)?;
        let name: DiskName = name.parse()?;
        match changes
            .entry(name.clone())
            .or_insert_with(|| ChangeSource::Extents(Vec::new()))
        {
            ChangeSource::Extents(files) => files.push(PathBuf::from(file)),
            _ => two_sources(&name)?,
        }
    }
    for b in &args.base {
        let (name, old) = split_pair("--base", b)?;
        let name: DiskName = name.parse()?;
        if changes.contains_key(&name) {
            two_sources(&name)?;
        }
        changes.insert(name, ChangeSource::Base(PathBuf::from(old)));
    }
    for b in &args.bitmaps {
        let (name, spec) = split_pair("--bitmap", b)?;
        let name: DiskName = name.parse()?;
        let (bitmap_name, uri) = match spec.split_once('@') {
            Some((n, uri)) => (n, Some(uri.to_string())),
            None => (spec, None),
        };
        let bitmap = BitmapRef {
            name: bitmap_name.to_string(),
            uri,
            checkpoint: false,
        };
        if bitmap.name.is_empty() || bitmap.uri.as_deref() == Some("") {
            return Err(Error::InvalidArgument(format!(
                "--bitmap {b:?}: give DISK=NAME or DISK=NAME@URI"
            ))
            .into());
        }
        match changes
            .entry(name.clone())
            .or_insert_with(|| ChangeSource::Bitmaps(Vec::new()))
        {
            ChangeSource::Bitmaps(list) => list.push(bitmap),
            _ => two_sources(&name)?,
        }
    }
    Ok(BackupRequest {
        vm,
        disks,
        changes,
        audit_percent: args.audit_unchanged,
        // Resolved once the repository is open (it may be a part of an id).
        parent: None,
        labels,
        host: host.into(),
        time,
        allow_future: args.allow_future,
        checkpoints: BTreeMap::new(),
    })
}

/// Two change sources for one disk are refused: which one to trust?
fn two_sources(name: &DiskName) -> Result<()> {
    Err(Error::InvalidArgument(format!(
        "disk {name} has more than one kind of change source (--changed, --base, --bitmap): \
         give one kind per disk"
    ))
    .into())
}
