//! What encryption costs next to what a backup already does to each chunk:
//! the figures `bench/crypto` prints (single thread, same chunks, same run).
//!
//! ```text
//! seal_bench data [IMAGE] [--bytes N] [--rounds R] [--level L]
//! seal_bench argon2 [--rounds R] [--t T] [--m-kib M] [--p P]
//! ```
//!
//! `data` cuts IMAGE (or 256 MiB of generated data: half random, half
//! log text) into chunks as a backup does (16 MiB segments, default
//! FastCDC sizes), then times, alternating, median of R rounds: zstd
//! compression, sealing of the compressed chunks to the data public key
//! (AES-256-GCM, and XChaCha20-Poly1305 of formats 2 and 3), opening them, zstd decompression, plain and keyed BLAKE3. `argon2`
//! times the making of a key slot with the default argon2id costs (or
//! those given). Output: one JSON object.

use std::time::Instant;

use rand::RngCore;
use xfull_core::chunker::{ChunkParams, for_each_chunk};
use xfull_core::crypto::{Argon2Params, DataCipher, DataSecretKey, IdHasher, SealKind, SecretKey};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn generated(bytes: usize) -> Vec<u8> {
    let mut data = vec![0u8; bytes];
    let half = bytes / 2;
    rand::rng().fill_bytes(&mut data[..half]);
    let line = b"2026-11-25 INFO backup of segment finished without error\n";
    for (i, b) in data[half..].iter_mut().enumerate() {
        *b = line[i % line.len()];
    }
    data
}

fn chunks(data: &[u8]) -> Vec<&[u8]> {
    let params = ChunkParams::default();
    let mut out = Vec::new();
    for segment in data.chunks(16 << 20) {
        for_each_chunk(&params, segment, |off, len| {
            out.push(&segment[off..off + len])
        });
    }
    out
}

fn time<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t = Instant::now();
    let v = f();
    (t.elapsed().as_secs_f64(), v)
}

fn data(args: &[String]) {
    let limit = arg(args, "--bytes", 256 << 20) as usize;
    let rounds = arg(args, "--rounds", 3).max(1);
    let level = arg(args, "--level", 3) as i32;
    let input = match args.get(1).filter(|a| !a.starts_with("--")) {
        Some(path) => {
            let mut d = std::fs::read(path).expect("reading IMAGE");
            d.truncate(limit);
            d
        }
        None => generated(limit),
    };
    let chunking = median(
        (0..rounds)
            .map(|_| time(|| chunks(&input).len()).0)
            .collect(),
    );
    let chunks = chunks(&input);
    let secret = DataSecretKey::random();
    let opener = xfull_core::crypto::DataOpener::new(secret.clone());
    let keyed = IdHasher::keyed(SecretKey::random());
    let plain = IdHasher::plain();
    let mut cz = zstd::bulk::Compressor::new(level).expect("zstd");
    let mut dz = zstd::bulk::Decompressor::new().expect("zstd");
    let names: Vec<String> = chunks.iter().map(|c| plain.id(c).to_hex()).collect();
    let (mut compress, mut seal, mut open, mut decompress, mut hash, mut khash) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut seal_x, mut open_x) = (vec![], vec![]);
    let (mut stored_plain, mut stored_sealed) = (0usize, 0usize);
    for _ in 0..rounds {
        let (t, compressed) = time(|| {
            chunks
                .iter()
                .map(|c| cz.compress(c).expect("zstd"))
                .collect::<Vec<_>>()
        });
        compress.push(t);
        // One sealer per session: the key exchange is paid once. Each
        // cipher in turn: AES-256-GCM (format 4) and XChaCha20-Poly1305
        // (formats 2 and 3).
        let mut opened = Vec::new();
        for (cipher, seal, open) in [
            (DataCipher::Aes256Gcm, &mut seal, &mut open),
            (DataCipher::XChaCha20Poly1305, &mut seal_x, &mut open_x),
        ] {
            let (t, sealed) = time(|| {
                let sealer = xfull_core::crypto::DataSealer::new(&secret.public(), cipher);
                compressed
                    .iter()
                    .zip(&names)
                    .map(|(c, n)| sealer.seal(SealKind::Chunk, n, c))
                    .collect::<Vec<_>>()
            });
            seal.push(t);
            // Opened as a restore does: into one reused buffer.
            let (t, lens) = time(|| {
                let mut buf = Vec::new();
                sealed
                    .iter()
                    .zip(&names)
                    .map(|(s, n)| {
                        opener
                            .open_into(SealKind::Chunk, n, s, &mut buf)
                            .expect("opens");
                        buf.len()
                    })
                    .sum::<usize>()
            });
            open.push(t);
            assert_eq!(lens, compressed.iter().map(Vec::len).sum::<usize>());
            if cipher == DataCipher::Aes256Gcm {
                // What format 4 stores.
                stored_sealed = sealed.iter().map(Vec::len).sum();
            }
            opened = sealed;
        }
        let opened: Vec<Vec<u8>> = opened
            .iter()
            .zip(&names)
            .map(|(s, n)| opener.open(SealKind::Chunk, n, s).expect("opens"))
            .collect();
        let (t, _) = time(|| {
            for (c, orig) in opened.iter().zip(&chunks) {
                let d = dz.decompress(c, orig.len()).expect("zstd");
                assert_eq!(d.len(), orig.len());
            }
        });
        decompress.push(t);
        hash.push(time(|| chunks.iter().map(|c| plain.id(c)).collect::<Vec<_>>()).0);
        khash.push(time(|| chunks.iter().map(|c| keyed.id(c)).collect::<Vec<_>>()).0);
        stored_plain = compressed.iter().map(Vec::len).sum();
    }
    let mib = input.len() as f64 / (1 << 20) as f64;
    let (sx, ox) = (median(seal_x), median(open_x));
    let (c, s, o, d, h, k) = (
        median(compress),
        median(seal),
        median(open),
        median(decompress),
        median(hash),
        median(khash),
    );
    println!(
        "{{\"bytes\": {}, \"chunks\": {}, \"zstd_level\": {level}, \"rounds\": {rounds}, \
         \"compress_mib_s\": {:.0}, \"seal_mib_s\": {:.0}, \"open_mib_s\": {:.0}, \
         \"decompress_mib_s\": {:.0}, \"blake3_mib_s\": {:.0}, \"keyed_blake3_mib_s\": {:.0}, \
         \"seal_over_compress\": {:.4}, \"open_over_decompress\": {:.4}, \
         \"keyed_over_plain_hash\": {:.3}, \"chunk_mib_s\": {:.0}, \
         \"seal_over_backup_cpu\": {:.4}, \"xchacha_seal_mib_s\": {:.0}, \
         \"xchacha_open_mib_s\": {:.0}, \"xchacha_seal_over_backup_cpu\": {:.4}, \
         \"stored_bytes_plain\": {stored_plain}, \
         \"stored_bytes_sealed\": {stored_sealed}, \"stored_overhead\": {:.5}}}",
        input.len(),
        chunks.len(),
        mib / c,
        mib / s,
        mib / o,
        mib / d,
        mib / h,
        mib / k,
        s / c,
        o / d,
        k / h,
        mib / chunking,
        // What a backup already spends per byte on the CPU (chunking,
        // hashing, compressing; not reading or sending): sealing's share.
        s / (chunking + h + c),
        mib / sx,
        mib / ox,
        sx / (chunking + h + c),
        stored_sealed as f64 / stored_plain as f64 - 1.0,
    );
}

fn argon2(args: &[String]) {
    let rounds = arg(args, "--rounds", 3).max(1);
    let keys = xfull_core::crypto::MasterKeys::generate();
    let secret = xfull_core::crypto::Secret::password(b"correct horse".to_vec(), "bench");
    let d = Argon2Params::DEFAULT;
    let p = Argon2Params {
        t: arg(args, "--t", d.t as u64) as u32,
        m_kib: arg(args, "--m-kib", d.m_kib as u64) as u32,
        p: arg(args, "--p", d.p as u64) as u32,
    };
    let times: Vec<f64> = (0..rounds)
        .map(|_| {
            time(|| {
                xfull_core::crypto::KeySlot::create(
                    "0123456789abcdef",
                    &keys,
                    &keys,
                    &secret,
                    p,
                    chrono::Utc::now(),
                )
                .expect("slot")
            })
            .0
        })
        .collect();
    println!(
        "{{\"m_kib\": {}, \"t\": {}, \"p\": {}, \"rounds\": {rounds}, \"seconds\": {:.3}}}",
        p.m_kib,
        p.t,
        p.p,
        median(times)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("data") => data(&args),
        Some("argon2") => argon2(&args),
        _ => {
            eprintln!(
                "usage: seal_bench data [IMAGE] [--bytes N] [--rounds R] [--level L]\n       \
                 seal_bench argon2 [--rounds R] [--t T] [--m-kib M]"
            );
            std::process::exit(2);
        }
    }
}
