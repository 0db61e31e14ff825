//! The read-only FUSE file system of `xfull mount`: a fixed tree
//! `VM/ID/DISK.img` and `VM/latest/DISK.img` (the newest point mounted of
//! that VM), each file an export of the engine's `serve` module, so reads
//! go through the same cache, read-ahead and verification as NBD clients.
//! FUSE calls arrive on fuser's thread; each read is answered from a
//! tokio task, so a slow fetch never holds the others up.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, Request,
};
use xfull_core::nbd::Export;

/// The tree never changes while mounted.
const TTL: Duration = Duration::from_secs(3600);

/// Largest read answered at once (the kernel asks for at most 128 KiB
/// to 1 MiB); the export takes up to 32 MiB.
const MAX_READ: u32 = 32 << 20;

enum Kind {
    Dir(Vec<(String, u64)>),
    File(Arc<dyn Export>),
}

struct Node {
    parent: u64,
    kind: Kind,
    time: SystemTime,
}

/// The tree; inode n is `nodes[n - 1]` (1 is the root).
pub struct PointsFs {
    nodes: Vec<Node>,
    runtime: tokio::runtime::Handle,
    uid: u32,
    gid: u32,
}

/// One mounted point: VM, id, time, its disks' exports.
pub struct MountedPoint {
    pub vm: String,
    pub id: String,
    pub time: SystemTime,
    pub disks: Vec<Arc<dyn Export>>,
}

impl PointsFs {
    /// Files and directories belong to `owner` (uid, gid): the
    /// mountpoint's owner.
    pub fn new(
        points: Vec<MountedPoint>,
        runtime: tokio::runtime::Handle,
        owner: (u32, u32),
    ) -> PointsFs {
        let mut fs = PointsFs {
            nodes: vec![Node {
                parent: 1,
                kind: Kind::Dir(Vec::new()),
                time: SystemTime::now(),
            }],
            runtime,
            uid: owner.0,
            gid: owner.1,
        };
        let mut vms: Vec<&str> = points.iter().map(|p| p.vm.as_str()).collect();
        vms.sort_unstable();
        vms.dedup();
        for vm in vms {
            let vm_dir = fs.add_dir(1, vm, SystemTime::now());
            let mut mine: Vec<&MountedPoint> = points.iter().filter(|p| p.vm == vm).collect();
            // Ids sort by time: the last is the newest.
            mine.sort_by(|a, b| a.id.cmp(&b.id));
            mine.dedup_by(|a, b| a.id == b.id);
            let newest = mine.last().map(|p| p.id.clone());
            for p in &mine {
                let names: Vec<&str> = if Some(&p.id) == newest.as_ref() {
                    vec![p.id.as_str(), "latest"]
                } else {
                    vec![p.id.as_str()]
                };
                for name in names {
                    let dir = fs.add_dir(vm_dir, name, p.time);
                    for d in &p.disks {
                        fs.add(
                            dir,
                            &format!("{}.img", d.name()),
                            Kind::File(d.clone()),
                            p.time,
                        );
                    }
                }
            }
        }
        fs
    }

    fn add_dir(&mut self, parent: u64, name: &str, time: SystemTime) -> u64 {
        self.add(parent, name, Kind::Dir(Vec::new()), time)
    }

    fn add(&mut self, parent: u64, name: &str, kind: Kind, time: SystemTime) -> u64 {
        self.nodes.push(Node { parent, kind, time });
        let ino = self.nodes.len() as u64;
        if let Kind::Dir(children) = &mut self.nodes[parent as usize - 1].kind {
            children.push((name.to_string(), ino));
        }
        ino
    }

    fn node(&self, ino: INodeNo) -> Option<&Node> {
        let i = u64::from(ino);
        (i >= 1).then(|| self.nodes.get(i as usize - 1)).flatten()
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let n = &self.nodes[ino as usize - 1];
        let (kind, size, perm, nlink) = match &n.kind {
            Kind::Dir(_) => (FileType::Directory, 0, 0o555, 2),
            Kind::File(e) => (FileType::RegularFile, e.size(), 0o444, 1),
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: n.time,
            mtime: n.time,
            ctime: n.time,
            crtime: n.time,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        }
    }
}

impl Filesystem for PointsFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = match self.node(parent).map(|n| &n.kind) {
            Some(Kind::Dir(children)) => children
                .iter()
                .find(|(n, _)| OsStr::new(n) == name)
                .map(|(_, ino)| *ino),
            _ => None,
        };
        match found {
            Some(ino) => reply.entry(&TTL, &self.attr(ino), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino) {
            Some(_) => reply.attr(&TTL, &self.attr(u64::from(ino))),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = flags.acc_mode() != fuser::OpenAccMode::O_RDONLY;
        match self.node(ino).map(|n| &n.kind) {
            Some(Kind::File(_)) if write => reply.error(Errno::EROFS),
            // The image never changes: the kernel may keep its pages.
            Some(Kind::File(_)) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Some(Kind::Dir(_)) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(Kind::File(e)) = self.node(ino).map(|n| &n.kind) else {
            return reply.error(Errno::ENOENT);
        };
        if offset >= e.size() || size == 0 {
            return reply.data(&[]);
        }
        let len = u64::from(size.min(MAX_READ)).min(e.size() - offset) as u32;
        let e = e.clone();
        self.runtime.spawn(async move {
            match e.read(offset, len).await {
                Ok(b) => reply.data(&b),
                // The warning naming the damage is printed by the mount.
                Err(_) => reply.error(Errno::EIO),
            }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(Node {
            kind: Kind::Dir(children),
            parent,
            ..
        }) = self.node(ino)
        else {
            return reply.error(Errno::ENOTDIR);
        };
        let mut all: Vec<(u64, FileType, &str)> = vec![
            (u64::from(ino), FileType::Directory, "."),
            (*parent, FileType::Directory, ".."),
        ];
        for (name, child) in children {
            let kind = match self.nodes[*child as usize - 1].kind {
                Kind::Dir(_) => FileType::Directory,
                Kind::File(_) => FileType::RegularFile,
            };
            all.push((*child, kind, name));
        }
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}
