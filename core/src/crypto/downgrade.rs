//! Defences against a downgraded config: the config is plain (it says
//! whether the repository is encrypted), so someone who can rewrite it
//! could make clients treat an encrypted repository as unencrypted and
//! write new backups in the clear. Three checks close most of it
//! (docs/design.md, "Encryption", says what they do not cover):
//!
//! - here: an unencrypted config in a repository whose `keys/` holds key
//!   slots is refused as damage naming the config;
//! - [`crate::crypto::seen`]: a client-side record of repositories seen
//!   encrypted refuses one that turns unencrypted;
//! - `codec.rs`: a sealed object met while the codec is plain is damage
//!   that says so.

use crate::backend::ObjectMeta;
use crate::config::RepoConfig;
use crate::crypto::slot::parse_slot_key;
use crate::error::{Error, Result};
use crate::keys;

/// Refuses an unencrypted config when `listed` (the listing of `keys/`
/// that opening reads with the config, `repo.rs::Opening`) holds key
/// slots.
pub fn check_listed(listed: &[ObjectMeta], config: &RepoConfig) -> Result<()> {
    if config.encryption.is_some() {
        return Ok(());
    }
    if let Some(meta) = listed.iter().find(|m| parse_slot_key(&m.key).is_some()) {
        return Err(Error::corrupt(
            keys::CONFIG,
            format!(
                "the config says unencrypted but key slots exist ({}): the config may \
                 have been replaced",
                meta.key
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::backend::{Backend, PutMode};
    use crate::chunker::ChunkParams;
    use crate::config::{DEFAULT_SEGMENT_SIZE, Encryption};
    use crate::crypto::slot::slot_key;
    use crate::repo::Repository;
    use crate::testing::MemBackend;

    fn config(encrypted: bool) -> RepoConfig {
        let mut c = RepoConfig::new(DEFAULT_SEGMENT_SIZE, ChunkParams::default(), 3).unwrap();
        c.encryption = encrypted.then_some(Encryption { check: [1; 32] });
        c
    }

    #[tokio::test]
    async fn an_unencrypted_config_beside_key_slots_is_damage_naming_the_config() {
        let b = std::sync::Arc::new(MemBackend::default());
        let plain = config(false);
        b.put(
            keys::CONFIG,
            Bytes::from(plain.encode().unwrap()),
            PutMode::Create,
        )
        .await
        .unwrap();
        Repository::open(b.clone()).await.unwrap();
        b.put(
            &slot_key("0123456789abcdef"),
            Bytes::from_static(b"slot"),
            PutMode::Create,
        )
        .await
        .unwrap();
        let e = Repository::open(b.clone()).await.unwrap_err();
        assert!(
            matches!(&e, Error::Corrupt { key, .. } if key == keys::CONFIG) && e.is_damage(),
            "{e}"
        );
        assert!(e.to_string().contains("key slots exist"), "{e}");
        // An encrypted config is not this check's business.
        let listed = crate::crypto::manage::list_slots_stored(b.as_ref())
            .await
            .unwrap();
        check_listed(&listed, &config(true)).unwrap();
    }
}
