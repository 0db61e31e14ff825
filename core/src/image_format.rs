//! Recognises container image formats (qcow2, VMDK, VHDX, VHD, VDI) by
//! their magic bytes. A raw-disk backup of such a file stores the
//! container's bytes, which restore as the container, not as the guest's
//! disk, and deduplicate badly against raw backups of the same VM: the
//! backup goes on (the file may be meant), with a warning.

use crate::names::DiskName;
use crate::progress::{Notice, Progress, Warning};
use crate::source::DiskSource;

/// How much of a disk's start the checks need (VDI's signature is at 64).
const HEAD: usize = 512;

/// The container format `head` (a disk's first bytes) starts with, if any.
pub fn detect(head: &[u8]) -> Option<&'static str> {
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    if at(0, b"QFI\xfb") {
        Some("qcow2")
    } else if at(0, b"KDMV") || at(0, b"COWD") || at(0, b"# Disk DescriptorFile") {
        // Sparse extent, ESXi COW extent, or a text descriptor.
        Some("VMDK")
    } else if at(0, b"vhdxfile") {
        Some("VHDX")
    } else if at(0, b"conectix") {
        // A dynamic VHD starts with a copy of its footer.
        Some("VHD")
    } else if at(64, &[0x7f, 0x10, 0xda, 0xbe]) {
        // VDI: the signature 0xbeda107f, little-endian, after a text
        // banner whose wording varies.
        Some("VDI")
    } else {
        None
    }
}

/// Reads the start of `source` and queues a warning if it looks like a
/// container image. Unreadable or short sources are left to the backup,
/// which reports them properly.
pub fn warn_if_container(name: &DiskName, source: &DiskSource, progress: &Progress) {
    let len = source.size().min(HEAD as u64) as usize;
    let mut head = vec![0u8; len];
    if source.read_at(0, &mut head).is_err() {
        return;
    }
    if let Some(format) = detect(&head) {
        progress.notice(Notice::Warning(Warning::ContainerImage {
            disk: name.to_string(),
            path: source.path().display().to_string(),
            format: format.into(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::detect;

    #[test]
    fn recognises_the_common_formats_and_not_raw_data() {
        let mut vdi = vec![0u8; 128];
        vdi[..40].copy_from_slice(b"<<< Oracle VM VirtualBox Disk Image >>>\n");
        vdi[64..68].copy_from_slice(&[0x7f, 0x10, 0xda, 0xbe]);
        assert_eq!(detect(b"QFI\xfb\0\0\0\x03"), Some("qcow2"));
        assert_eq!(detect(b"KDMV\x01\0\0\0"), Some("VMDK"));
        assert_eq!(detect(b"# Disk DescriptorFile\nversion=1"), Some("VMDK"));
        assert_eq!(detect(b"vhdxfile"), Some("VHDX"));
        assert_eq!(detect(b"conectix"), Some("VHD"));
        assert_eq!(detect(&vdi), Some("VDI"));
        assert_eq!(detect(&[0u8; 512]), None);
        assert_eq!(detect(b"QFI"), None);
        // An MBR boot sector is a raw disk.
        let mut mbr = vec![0u8; 512];
        mbr[510..].copy_from_slice(&[0x55, 0xaa]);
        assert_eq!(detect(&mbr), None);
    }
}
