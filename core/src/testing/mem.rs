//! An in-memory object store with a clock the test controls, so that
//! protocol tests can expire a lease or a sweep without waiting, and run
//! the same steps in every order deterministically.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Duration, TimeZone, Utc};
use futures::stream::BoxStream;

use crate::backend::{Backend, BackendError, ObjectMeta, PutMode, PutOptions};

/// The store's clock. Every request moves it forward by a millisecond,
/// so that objects written one after the other have distinct times, as
/// they would on a real server.
#[derive(Clone, Debug)]
pub struct Clock(Arc<Mutex<DateTime<Utc>>>);

impl Default for Clock {
    fn default() -> Self {
        Clock(Arc::new(Mutex::new(
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
                .single()
                .unwrap_or_default(),
        )))
    }
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += by;
    }

    fn tick(&self) -> DateTime<Utc> {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += Duration::milliseconds(1);
        *t
    }
}

#[derive(Debug, Default)]
pub struct MemBackend {
    objects: Mutex<BTreeMap<String, (Bytes, DateTime<Utc>)>>,
    clock: Clock,
    /// Requests by kind, named as the S3 backend names them.
    counts: Mutex<BTreeMap<&'static str, u64>>,
    /// Room left for chunk data, as a nearly full local disk has
    /// (`limit_data_room`); `None`: no limit.
    data_room: Mutex<Option<u64>>,
}

impl MemBackend {
    pub fn new(clock: Clock) -> Self {
        MemBackend {
            objects: Mutex::default(),
            clock,
            counts: Mutex::default(),
            data_room: Mutex::default(),
        }
    }

    /// From now on chunk data ([`crate::backend::ObjectClass::Data`]) may
    /// take `bytes` more, and a put of more fails as
    /// [`BackendError::NoSpace`]; deletes give nothing back.
    pub fn limit_data_room(&self, bytes: Option<u64>) {
        *self.data_room.lock().unwrap_or_else(|p| p.into_inner()) = bytes;
    }

    /// An independent copy of the store and its clock, for running many
    /// schedules from one prepared state.
    pub fn fork(&self) -> MemBackend {
        MemBackend {
            objects: Mutex::new(self.lock().clone()),
            clock: Clock(Arc::new(Mutex::new(self.clock.now()))),
            counts: Mutex::default(),
            data_room: Mutex::new(*self.data_room.lock().unwrap_or_else(|p| p.into_inner())),
        }
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Bytes, DateTime<Utc>)>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, kind: &'static str) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind)
            .or_default() += 1;
    }

    fn not_found(&self, key: &str) -> BackendError {
        BackendError::NotFound {
            location: self.location(),
            key: key.to_string(),
        }
    }
}

#[async_trait]
impl Backend for MemBackend {
    fn location(&self) -> String {
        "memory://".into()
    }

    async fn put_opts(&self, key: &str, data: Bytes, opts: PutOptions) -> Result<(), BackendError> {
        self.count("put");
        if opts.retention.is_some() {
            // Never drop a lock silently (`LockSim` plays one).
            return Err(BackendError::Other {
                location: self.location(),
                message: format!("cannot lock {key}: this store has no object lock"),
            });
        }
        if opts.class == crate::backend::ObjectClass::Data {
            let mut room = self.data_room.lock().unwrap_or_else(|p| p.into_inner());
            match room.as_mut() {
                Some(r) if *r < data.len() as u64 => {
                    return Err(BackendError::NoSpace {
                        location: self.location(),
                        key: key.to_string(),
                        message: format!("{r} bytes of room for chunk data"),
                    });
                }
                Some(r) => *r -= data.len() as u64,
                None => {}
            }
        }
        let now = self.clock.tick();
        let mut objects = self.lock();
        if opts.mode == PutMode::Create && objects.contains_key(key) {
            return Err(BackendError::AlreadyExists {
                location: self.location(),
                key: key.to_string(),
            });
        }
        objects.insert(key.to_string(), (data, now));
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes, BackendError> {
        self.count("get");
        self.clock.tick();
        let objects = self.lock();
        objects
            .get(key)
            .map(|o| o.0.clone())
            .ok_or_else(|| self.not_found(key))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BackendError> {
        let all = self.get(key).await?;
        let end = range.end.min(all.len() as u64) as usize;
        let start = (range.start as usize).min(end);
        Ok(all.slice(start..end))
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, BackendError> {
        self.count("head");
        self.clock.tick();
        let objects = self.lock();
        let (data, time) = objects.get(key).ok_or_else(|| self.not_found(key))?;
        Ok(ObjectMeta {
            key: key.to_string(),
            size: data.len() as u64,
            last_modified: *time,
            storage_class: None,
        })
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, BackendError>> {
        self.count("list");
        self.clock.tick();
        let found: Vec<_> = self
            .lock()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (data, time))| {
                Ok(ObjectMeta {
                    key: k.clone(),
                    size: data.len() as u64,
                    last_modified: *time,
                    storage_class: None,
                })
            })
            .collect();
        Box::pin(futures::stream::iter(found))
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), BackendError> {
        self.count("delete");
        self.clock.tick();
        let mut objects = self.lock();
        for k in keys {
            objects.remove(k);
        }
        Ok(())
    }

    async fn free_for_data(&self) -> Result<Option<u64>, BackendError> {
        Ok(*self.data_room.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn request_counts(&self) -> BTreeMap<&'static str, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        crate::conformance::run_all(&MemBackend::default()).await;
    }

    #[tokio::test]
    async fn times_come_from_the_test_clock() {
        let b = MemBackend::default();
        b.put("a", Bytes::from_static(b"1"), PutMode::Create)
            .await
            .unwrap();
        b.clock().advance(Duration::hours(1));
        b.put("b", Bytes::from_static(b"2"), PutMode::Create)
            .await
            .unwrap();
        let a = b.head("a").await.unwrap().last_modified;
        let later = b.head("b").await.unwrap().last_modified;
        assert!(later - a > Duration::minutes(59));
    }
}
