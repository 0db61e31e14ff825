//! Key management on `keys/` through the [`Backend`]: what `init`, the
//! opening of a repository and `xfull key list | add | remove | passwd`
//! call.
//!
//! Rules: a wrong secret writes nothing; a new slot is written (create-
//! only) before an old one is removed, so a crash between the two leaves
//! both, never neither; the last authentic full-access slot is never
//! removed. Managing slots needs a full-access key (only it can sign
//! slots: crypto/slot.rs).

use chrono::Utc;
use futures::{StreamExt, TryStreamExt};

use crate::backend::{Backend, ObjectMeta, PutMode};
use crate::crypto::master::{Access, MasterKeys};
use crate::crypto::secret::Secret;
use crate::crypto::slot::{self, Argon2Params, KeySlot, SLOTS};
use crate::error::{Error, Result};

/// Key slots read at once: a repository has a few (a password, a key
/// file, a backup-only key), each a round trip that every command waits
/// for before it can start.
const SLOTS_AT_ONCE: usize = 8;

/// The listing of `keys/`, which every opening starts from: to unlock,
/// or to refuse an unencrypted config beside key slots.
pub async fn list_slots_stored(backend: &dyn Backend) -> Result<Vec<ObjectMeta>> {
    Ok(backend.list(SLOTS).try_collect().await?)
}

/// Whether `keys/` holds objects named as key slots (read or not).
pub async fn has_slots(backend: &dyn Backend) -> Result<bool> {
    let listed = list_slots_stored(backend).await?;
    Ok(listed
        .iter()
        .any(|m| slot::parse_slot_key(&m.key).is_some()))
}

/// Reads every key slot; damaged ones come back as errors in place.
async fn read_slots(backend: &dyn Backend) -> Result<Vec<(String, Result<KeySlot>)>> {
    read_listed_slots(backend, list_slots_stored(backend).await?).await
}

/// Reads the key slots `listed` names (a listing of `keys/`).
async fn read_listed_slots(
    backend: &dyn Backend,
    listed: Vec<ObjectMeta>,
) -> Result<Vec<(String, Result<KeySlot>)>> {
    let read: Vec<Option<(String, Result<KeySlot>)>> = futures::stream::iter(listed)
        .map(|meta| async move {
            let Some(id) = slot::parse_slot_key(&meta.key) else {
                return Ok(None); // not a slot name: a stray file, ignored like elsewhere
            };
            // Refused by its listed size before it is read: a hostile
            // object under keys/ must not fill memory, 8 at a time.
            if let Err(e) = slot::check_len(&meta.key, meta.size) {
                return Ok(Some((id.to_string(), Err(e))));
            }
            match backend
                .get_at_most(&meta.key, slot::MAX_SLOT_LEN as u64)
                .await
            {
                Ok(bytes) => Ok(Some((id.to_string(), KeySlot::decode(&meta.key, &bytes)))),
                Err(e) if e.is_not_found() => Ok(None), // removed meanwhile
                Err(e) => Err(Error::from(e)),
            }
        })
        .buffered(SLOTS_AT_ONCE)
        .try_collect()
        .await?;
    let mut out: Vec<_> = read.into_iter().flatten().collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Makes the master keys of a new repository and its first slot (full
/// access) for `secret`. Refused if `keys/` already holds slots.
pub async fn create_keys(
    backend: &dyn Backend,
    secret: &Secret,
    params: Argon2Params,
) -> Result<MasterKeys> {
    if !read_slots(backend).await?.is_empty() {
        return Err(Error::KeysExist {
            location: backend.location(),
        });
    }
    let keys = MasterKeys::generate();
    let id = write_slot(backend, &keys, &keys, secret, params).await?;
    Ok(keys.with_slot(&id))
}

/// The first slot (full access) of a new repository that shares `keys`
/// with the repository they were unlocked from (`init --like`): chunks,
/// nodes and sealed objects are then named and sealed alike in both, so
/// `copy` can move them verbatim. Needs a full-access key (it signs the
/// slot); refused if `keys/` already holds slots.
pub async fn create_keys_like(
    backend: &dyn Backend,
    keys: &MasterKeys,
    secret: &Secret,
    params: Argon2Params,
) -> Result<MasterKeys> {
    keys.slot_auth_key("init --like")?;
    if !read_slots(backend).await?.is_empty() {
        return Err(Error::KeysExist {
            location: backend.location(),
        });
    }
    let id = write_slot(backend, keys, keys, secret, params).await?;
    Ok(keys.clone().with_slot(&id))
}

/// Wraps `keys` for `secret` in a new slot, signed by `full`.
async fn write_slot(
    backend: &dyn Backend,
    keys: &MasterKeys,
    full: &MasterKeys,
    secret: &Secret,
    params: Argon2Params,
) -> Result<String> {
    let id = slot::new_slot_id();
    let (k, f, s) = (keys.clone(), full.clone(), secret.clone());
    let slot_id = id.clone();
    let slot = crate::task::blocking("key slot derivation", move || {
        KeySlot::create(&slot_id, &k, &f, &s, params, Utc::now())
    })
    .await??;
    let (key, bytes) = (slot.key(), bytes::Bytes::from(slot.encode()));
    match backend.put(&key, bytes.clone(), PutMode::Create).await {
        Ok(()) => {}
        // An SDK retries a create-only put whose reply was lost; if the
        // first attempt landed, the retry is refused (412) and the slot
        // is written all the same: `init` then failed and left its slot
        // without a config (review, 2026-12-07). Ours if the stored
        // bytes are exactly ours (a fresh random id and salt and nonce:
        // nobody else writes them).
        Err(e) if e.is_already_exists() => {
            match backend.get_at_most(&key, slot::MAX_SLOT_LEN as u64).await {
                Ok(stored) if stored == bytes => {}
                _ => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    }
    Ok(id)
}

/// The master keys, from the first slot that `secret` opens. A wrong
/// secret is [`Error::WrongSecret`] naming where it came from; if no slot
/// opens and some are damaged, the first damaged one is reported instead
/// (the right one may be among them).
pub async fn unlock(backend: &dyn Backend, secret: &Secret) -> Result<MasterKeys> {
    unlock_listed(backend, list_slots_stored(backend).await?, secret, |_| true).await
}

/// [`unlock`] from a listing of `keys/` already made, taking only keys
/// that `ours` accepts (the config's check value): a slot that opens to
/// other keys (copied from another repository with the same password,
/// which anyone who may create objects can plant, and tried first when it
/// is cheaper) is damage of that slot, and the next slot is tried (it
/// failed every open; review, stop 50).
pub async fn unlock_listed(
    backend: &dyn Backend,
    listed: Vec<ObjectMeta>,
    secret: &Secret,
    ours: impl Fn(&MasterKeys) -> bool,
) -> Result<MasterKeys> {
    let mut slots = read_listed_slots(backend, listed).await?;
    if slots.is_empty() {
        return Err(Error::corrupt(SLOTS, "the repository has no key slots"));
    }
    in_trial_order(&mut slots);
    let mut damaged = None;
    for (_, slot) in slots {
        let slot = match slot {
            Ok(slot) if slot.fits(secret) => slot,
            Ok(_) => continue,
            Err(e) => {
                damaged.get_or_insert(e);
                continue;
            }
        };
        let s = secret.clone();
        let key = slot.key();
        match crate::task::blocking("key slot derivation", move || slot.open(&s)).await? {
            Ok(Some(keys)) if ours(&keys) => return Ok(keys),
            Ok(Some(_)) => {
                damaged.get_or_insert(Error::corrupt(
                    key,
                    "its keys are not this repository's (they do not match the config's check value)",
                ));
            }
            Ok(None) => {}
            Err(e) => {
                damaged.get_or_insert(e);
            }
        }
    }
    Err(damaged.unwrap_or_else(|| Error::WrongSecret {
        location: backend.location(),
        secret: secret.source().to_string(),
    }))
}

/// Orders slots as [`unlock_listed`] tries them: cheapest derivation
/// first, by name among equals. No slot can be told authentic before its
/// derivation, and whoever may create objects (a backup-only host too)
/// can plant slots; by name, planted slots sorting first at the largest
/// cost accepted (1 GiB, 64 passes) each cost every unlock a minute or
/// more before the real slot was tried (review, stop 50). Now a planted
/// slot costs at most what the real one does.
pub fn in_trial_order(slots: &mut [(String, Result<KeySlot>)]) {
    slots.sort_by_key(|(_, s)| s.as_ref().map_or(u64::MAX, |s| s.header.kdf.cost()));
}

/// One line of `xfull key list`.
#[derive(Debug)]
pub struct SlotInfo {
    pub id: String,
    /// The slot's header, or why it cannot be read.
    pub header: Result<slot::SlotHeader>,
    /// Whether a full-access holder of this repository wrote it; `None`
    /// when the lister's key is backup-only (it cannot tell).
    pub authentic: Option<bool>,
    /// The slot `keys` were unlocked from.
    pub current: bool,
}

/// Every slot, with what can be told about it with `keys`.
pub async fn list_slots(backend: &dyn Backend, keys: &MasterKeys) -> Result<Vec<SlotInfo>> {
    let mut out = Vec::new();
    for (id, slot) in read_slots(backend).await? {
        let authentic = match (&slot, keys.access()) {
            (Ok(s), Access::Full) => Some(s.is_authentic(keys)?),
            (Err(_), Access::Full) => Some(false),
            (_, Access::BackupOnly) => None,
        };
        out.push(SlotInfo {
            current: id == keys.slot(),
            id,
            header: slot.map(|s| s.header),
            authentic,
        });
    }
    Ok(out)
}

/// Adds a slot for `secret` (`xfull key add [--backup-only]`); returns its
/// id.
pub async fn add_slot(
    backend: &dyn Backend,
    keys: &MasterKeys,
    secret: &Secret,
    access: Access,
    params: Argon2Params,
) -> Result<String> {
    keys.slot_auth_key("key add")?;
    refuse_if_it_opens(backend, keys, secret).await?;
    let wrapped = match access {
        Access::Full => keys.clone(),
        Access::BackupOnly => keys.backup_only(),
    };
    write_slot(backend, &wrapped, keys, secret, params).await
}

/// Refuses a new secret that opens a slot already (tried on every slot
/// of its kind, cheapest first): `key passwd` to the same, leaked,
/// password changed nothing, and `key add` of a full slot with a
/// backup-only slot's password gave full access to every host that has
/// it, silently (review, 2026-12-07). Damaged slots are passed over,
/// and so are slots not made with these keys (a cheap MAC): a planted
/// slot of 1 GiB and 64 passes cost a minute and 1 GiB each to try, on
/// the very `key passwd` that rotates a password after a leak (review
/// 103), and opening one grants nothing.
async fn refuse_if_it_opens(
    backend: &dyn Backend,
    keys: &MasterKeys,
    secret: &Secret,
) -> Result<()> {
    let mut slots = read_slots(backend).await?;
    in_trial_order(&mut slots);
    for (id, slot) in slots {
        let Ok(slot) = slot else { continue };
        if !slot.fits(secret) || !slot.is_authentic(keys)? {
            continue;
        }
        let s = secret.clone();
        if let Ok(Some(_)) =
            crate::task::blocking("key slot derivation", move || slot.open(&s)).await?
        {
            return Err(Error::SecretInUse {
                secret: secret.source().to_string(),
                slot: id,
            });
        }
    }
    Ok(())
}

/// Removes slot `id` (`xfull key remove`), unless no other authentic
/// full-access slot would be left.
pub async fn remove_slot(backend: &dyn Backend, keys: &MasterKeys, id: &str) -> Result<()> {
    keys.slot_auth_key("key remove")?;
    let slots = read_slots(backend).await?;
    if !slots.iter().any(|(s, _)| s == id) {
        return Err(Error::KeySlotNotFound {
            location: backend.location(),
            slot: id.to_string(),
        });
    }
    let removing_full = match slots.iter().find(|(s, _)| s == id) {
        Some((_, Ok(slot))) => slot.header.access == Access::Full,
        _ => false, // a damaged slot opens nothing: removing it loses nothing
    };
    if !removing_full {
        backend.delete_many(&[slot::slot_key(id)]).await?;
        return Ok(());
    }
    if full_slots(&slots, keys, id)? == 0 {
        return Err(Error::LastFullKeySlot {
            slot: id.to_string(),
        });
    }
    // Two removals at once, of the last two full-access slots, each see
    // the other's slot before either deletes, and both would go: nobody
    // could open the repository again (found in review; the store has no
    // delete-if to make this atomic). So look again after the delete, and
    // if no full-access slot is left, put this one back from the bytes
    // read just before. Whichever removal looks last keeps a slot.
    let key = slot::slot_key(id);
    let stored = match backend.get_at_most(&key, slot::MAX_SLOT_LEN as u64).await {
        Ok(b) => b,
        Err(e) if e.is_not_found() => {
            return Err(Error::KeySlotNotFound {
                location: backend.location(),
                slot: id.to_string(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    backend.delete_many(std::slice::from_ref(&key)).await?;
    if full_slots(&read_slots(backend).await?, keys, id)? > 0 {
        return Ok(());
    }
    match backend.put(&key, stored, PutMode::Create).await {
        Err(e) if !e.is_already_exists() => return Err(e.into()),
        _ => {}
    }
    Err(Error::KeyRemovalRaced {
        slot: id.to_string(),
    })
}

/// The authentic full-access slots among `slots`, but `except`. Only
/// slots this repository's full keys signed count: a forged "full" slot
/// (junk under a full header) must not let the real last one go.
fn full_slots(
    slots: &[(String, Result<KeySlot>)],
    keys: &MasterKeys,
    except: &str,
) -> Result<usize> {
    let mut n = 0;
    for (other, slot) in slots {
        if other != except
            && let Ok(slot) = slot
            && slot.header.access == Access::Full
            && slot.is_authentic(keys)?
        {
            n += 1;
        }
    }
    Ok(n)
}

/// Replaces the slot `keys` were unlocked from by one for `new`, with the
/// same access (`xfull key passwd`); returns the new slot's id. The new
/// slot is written before the old one goes.
pub async fn change_secret(
    backend: &dyn Backend,
    keys: &MasterKeys,
    new: &Secret,
    params: Argon2Params,
) -> Result<String> {
    keys.slot_auth_key("key passwd")?;
    let old = slot::slot_key(keys.slot());
    // The unlocked keys' access, not the stored header's: read again
    // here it is not authenticated, and a header rewritten to
    // "backup-only" made the new slot so and the old full one went
    // (review, 2026-12-07). Both are full here (slot_auth_key).
    let id = add_slot(backend, keys, new, keys.access(), params).await?;
    backend.delete_many(&[old]).await?;
    Ok(id)
}
