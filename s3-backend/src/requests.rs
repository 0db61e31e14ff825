//! The requests themselves: one listing page, a GET, a PUT, a
//! DeleteObjects, a HEAD, each counted and sent through `send!` (attempts,
//! budget, error mapping).

use std::ops::Range;
use std::sync::atomic::Ordering;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier, StorageClass};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use xfull_core::backend::{Backend, BackendError, ObjectClass, ObjectMeta, PutOptions};

use crate::attempts::Attempts;
use crate::{S3Backend, lock};

impl S3Backend {
    /// One page of a listing and the token of the next, if any. A server
    /// that says "more" without a new token would end the listing early
    /// or never: an error either way (a short listing of what points use
    /// could make gc delete what they need).
    pub(crate) async fn list_page(
        &self,
        full: &str,
        prefix: &str,
        token: Option<String>,
    ) -> Result<(Vec<ObjectMeta>, Option<String>), BackendError> {
        self.counters.list.fetch_add(1, Ordering::Relaxed);
        let out = send!(
            self,
            self.client
                .list_objects_v2()
                .bucket(&self.opts.bucket)
                .prefix(full)
                .set_continuation_token(token.clone()),
            prefix
        )?;
        let items = out
            .contents()
            .iter()
            .filter_map(|o| {
                let key = self.unkey(o.key()?).to_string();
                Some(self.modified(&key, o.last_modified()).map(|t| ObjectMeta {
                    size: o.size().unwrap_or(0).max(0) as u64,
                    last_modified: t,
                    storage_class: o.storage_class().map(|c| c.as_str().to_string()),
                    key,
                }))
            })
            .collect::<Result<_, _>>()?;
        if out.is_truncated() != Some(true) {
            return Ok((items, None));
        }
        match out.next_continuation_token() {
            Some(next) if Some(next) != token.as_deref() && !next.is_empty() => {
                Ok((items, Some(next.to_string())))
            }
            _ => Err(BackendError::Other {
                location: self.location(),
                message: format!(
                    "listing {prefix}: the server says the listing goes on but gives no new \
                     continuation token"
                ),
            }),
        }
    }

    /// GET of a whole object of at most `max` bytes, or of a byte range
    /// of it. The body is read no further than that: a larger declared
    /// length is damage of the object before a byte is read, and a server
    /// that sends more than it declared, or than the range asked (one
    /// that ignores `Range` sends the whole object), is stopped there,
    /// so that no answer can hold more memory than the caller allowed.
    pub(crate) async fn fetch(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        max: u64,
    ) -> Result<Bytes, BackendError> {
        self.counters.get.fetch_add(1, Ordering::Relaxed);
        let out = send!(
            self,
            self.client
                .get_object()
                .bucket(&self.opts.bucket)
                .key(self.key(key))
                .set_range(
                    range
                        .as_ref()
                        .map(|r| format!("bytes={}-{}", r.start, r.end - 1))
                ),
            key
        )?;
        let max = range.as_ref().map_or(max, |r| r.end - r.start);
        let declared = out.content_length().and_then(|n| u64::try_from(n).ok());
        let over = |got: u64| match &range {
            None => BackendError::Corrupt {
                location: self.location(),
                key: key.to_string(),
                message: format!("{got} bytes or more, more than such an object can be ({max})"),
            },
            Some(r) => BackendError::Other {
                location: self.location(),
                message: format!(
                    "{key}: the server answered {got} bytes or more to a request for the {max} \
                     bytes {}..{}",
                    r.start, r.end
                ),
            },
        };
        if let Some(n) = declared.filter(|&n| n > max) {
            return Err(over(n));
        }
        let mut body = out.body;
        let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(max) as usize);
        while let Some(piece) = body.next().await {
            let piece = piece.map_err(|e| BackendError::Transient {
                location: self.location(),
                message: format!("reading {key}: {e}"),
            })?;
            let got = buf.len() as u64 + piece.len() as u64;
            if got > max {
                return Err(over(got));
            }
            buf.extend_from_slice(&piece);
        }
        Ok(Bytes::from(buf))
    }

    pub(crate) async fn raw_put(
        &self,
        key: &str,
        data: Bytes,
        create: bool,
        opts: &PutOptions,
    ) -> Result<(), BackendError> {
        self.counters.put.fetch_add(1, Ordering::Relaxed);
        let len = data.len() as u64;
        let mut req = self
            .client
            .put_object()
            .bucket(&self.opts.bucket)
            .key(self.key(key))
            .body(ByteStream::from(data));
        if create {
            req = req.if_none_match("*");
        }
        if let Some(c) = storage_class(self.chunk_class.as_ref(), opts.class) {
            req = req.storage_class(c);
        }
        if let Some(s) = &self.sse {
            req = req.server_side_encryption(s.clone());
        }
        if let Some(r) = &opts.retention {
            req = lock::with_retention(req, r);
        }
        send!(self, req, key, len, opts.urgent).map(|_| ())
    }
}

/// The storage class to ask for: the configured one for chunk data, the
/// bucket's default (STANDARD) for metadata, which every operation reads.
pub(crate) fn storage_class(
    chunks: Option<&StorageClass>,
    class: ObjectClass,
) -> Option<StorageClass> {
    match class {
        ObjectClass::Data => chunks.cloned(),
        ObjectClass::Metadata => None,
    }
}

impl S3Backend {
    /// One DeleteObjects request for at most 1,000 keys, each with a
    /// version id to delete that version for good, or none for a plain
    /// delete; the first object the store refused is the error.
    pub(crate) async fn delete_objects(
        &self,
        objects: &[(&str, Option<&str>)],
    ) -> Result<(), BackendError> {
        let Some(&(first, _)) = objects.first() else {
            return Ok(());
        };
        self.counters.delete.fetch_add(1, Ordering::Relaxed);
        let other = |e: &dyn std::fmt::Display| BackendError::Other {
            location: self.location(),
            message: e.to_string(),
        };
        let objects = objects
            .iter()
            .map(|&(k, v)| {
                ObjectIdentifier::builder()
                    .key(self.key(k))
                    .set_version_id(v.map(str::to_string))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| other(&e))?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| other(&e))?;
        let out = send!(
            self,
            self.client
                .delete_objects()
                .bucket(&self.opts.bucket)
                .delete(delete),
            first
        )?;
        if let Some(err) = out.errors().first() {
            let key = self.unkey(err.key().unwrap_or("?"));
            let (code, message) = (err.code().unwrap_or(""), err.message().unwrap_or(""));
            return Err(self.errors.not_deleted(key, code, message));
        }
        Ok(())
    }

    /// One HEAD: the object's size and time, and the whole answer for
    /// what else its headers say (storage class, thaw, retention).
    pub(crate) async fn head_object(
        &self,
        key: &str,
    ) -> Result<
        (
            ObjectMeta,
            aws_sdk_s3::operation::head_object::HeadObjectOutput,
        ),
        BackendError,
    > {
        self.counters.head.fetch_add(1, Ordering::Relaxed);
        let out = send!(
            self,
            self.client
                .head_object()
                .bucket(&self.opts.bucket)
                .key(self.key(key)),
            key
        )?;
        let meta = ObjectMeta {
            key: key.to_string(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            last_modified: self.modified(key, out.last_modified())?,
            storage_class: None,
        };
        Ok((meta, out))
    }
}

/// A listing as a stream, one page (one request, with its own attempt
/// counter) at a time: `page` gets where its page starts and returns its
/// items and where the next page starts, `None` after the last. A failed
/// page ends the stream with its error.
pub(crate) fn paged<'a, T, M, F, Fut>(first: M, page: F) -> BoxStream<'a, Result<T, BackendError>>
where
    T: Send + 'a,
    M: Send + 'a,
    F: Fn(M) -> Fut + Send + 'a,
    Fut: std::future::Future<Output = Result<(Vec<T>, Option<M>), BackendError>> + Send + 'a,
{
    futures::stream::unfold(Some(first), move |at| {
        let next_page = at.map(&page);
        async move {
            let (items, next) = match next_page?.await {
                Ok((items, next)) => (items.into_iter().map(Ok).collect(), next),
                Err(e) => (vec![Err(e)], None),
            };
            Some((futures::stream::iter(items), next))
        }
    })
    .flatten()
    .boxed()
}

impl S3Backend {
    /// When the server says `key` was last written. gc judges an object's
    /// age by it: a time left out was read as 1970, which made a running
    /// backup's new pack and nodes look old enough to delete (review
    /// 106.4). A server that leaves it out, or gives one no date can
    /// hold, is refused, naming the key.
    pub(crate) fn modified(
        &self,
        key: &str,
        t: Option<&aws_sdk_s3::primitives::DateTime>,
    ) -> Result<DateTime<Utc>, BackendError> {
        to_chrono(t).ok_or_else(|| BackendError::Other {
            location: self.location(),
            message: format!("the server gives no time of last change for {key}"),
        })
    }
}

fn to_chrono(t: Option<&aws_sdk_s3::primitives::DateTime>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
}

#[cfg(test)]
mod tests {
    use super::to_chrono;
    use aws_sdk_s3::primitives::DateTime;

    #[test]
    fn a_time_left_out_is_no_time_not_1970() {
        assert_eq!(to_chrono(None), None);
        let t = DateTime::from_secs(1_700_000_000);
        assert_eq!(to_chrono(Some(&t)).unwrap().timestamp(), 1_700_000_000);
        assert_eq!(to_chrono(Some(&DateTime::from_secs(i64::MAX))), None);
    }
}
