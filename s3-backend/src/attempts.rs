//! One request's attempts: counted as the SDK makes them (for messages
//! that say how often a request was tried), and cut short for failures
//! that more attempts do not cure (see [`Failure::max_attempts`]).
//!
//! Each request gets its own counter through the SDK's per-operation
//! config override: an interceptor counts, a retry classifier reads the
//! count. The SDK's classifiers still decide everything else; a
//! `RetryForbidden` from any classifier ends the retries. Each attempt is
//! tagged with its number for the request budget (`budget.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_s3::config::interceptors::{
    BeforeTransmitInterceptorContextMut, BeforeTransmitInterceptorContextRef, InterceptorContext,
};
use aws_sdk_s3::config::retry::{ClassifyRetry, RetryAction};
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;

use crate::budget::AttemptNo;
use crate::transport::Failure;

#[derive(Clone, Debug)]
pub(crate) struct Attempts {
    made: Arc<AtomicU32>,
    https: bool,
}

impl Attempts {
    pub fn new(https: bool) -> Attempts {
        Attempts {
            made: Arc::default(),
            https,
        }
    }

    /// Attempts made so far.
    pub fn made(&self) -> u32 {
        self.made.load(Ordering::Relaxed)
    }

    /// The per-request configuration that installs the counter.
    pub fn config(&self) -> aws_sdk_s3::config::Builder {
        aws_sdk_s3::config::Builder::default()
            .interceptor(self.clone())
            .retry_classifier(self.clone())
    }
}

impl Intercept for Attempts {
    fn name(&self) -> &'static str {
        "xfull attempt counter"
    }

    fn read_before_attempt(
        &self,
        _: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.made.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Tags the attempt with its number, so the request budget's connector
    /// can tell a retry from a first attempt (paid before sending).
    fn modify_before_transmit(
        &self,
        ctx: &mut BeforeTransmitInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        ctx.request_mut().add_extension(AttemptNo(self.made()));
        Ok(())
    }
}

impl ClassifyRetry for Attempts {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let Some(Err(e)) = ctx.output_or_error() else {
            return RetryAction::NoActionIndicated;
        };
        let failure = if let Some(c) = e.as_connector_error() {
            Failure::of(c, c.is_timeout(), self.https)
        } else if e.is_timeout_error() {
            Failure::NoAnswer
        } else {
            return RetryAction::NoActionIndicated;
        };
        match failure.max_attempts() {
            Some(max) if self.made() >= max => RetryAction::RetryForbidden,
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "xfull retry limit for unreachable endpoints"
    }
}
