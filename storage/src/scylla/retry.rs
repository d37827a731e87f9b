//! The retry policy: the driver's default, plus one retry of an idempotent
//! write that timed out.
//!
//! The default policy already retries once on `Unavailable` (next node),
//! on a read timeout where enough replicas answered, and on overload or a
//! broken connection when the statement is idempotent; it never retries a
//! serial (Paxos) request. It does not retry a plain write that timed out,
//! though every plain write of this backend is an idempotent upsert that
//! can safely run twice; doing so once turns many transient timeouts
//! (most importantly while copying a claimed commit batch into place) into
//! successes. Lightweight transactions are marked non-idempotent and are
//! never retried after a timeout, since their outcome is unknown.

use scylla::errors::{DbError, RequestAttemptError, WriteType};
use scylla::policies::retry::{
    DefaultRetrySession, RequestInfo, RetryDecision, RetryPolicy, RetrySession,
};
use scylla::statement::Consistency;

/// Whether a timed-out write of `write_type` may be retried once more.
pub fn retry_write_timeout(
    idempotent: bool,
    serial: bool,
    write_type: &WriteType,
    already_retried: bool,
) -> bool {
    idempotent
        && !serial
        && !already_retried
        && matches!(
            write_type,
            WriteType::Simple | WriteType::Batch | WriteType::UnloggedBatch | WriteType::BatchLog
        )
}

/// [`RetryPolicy`] of the ScyllaDB backend.
#[derive(Debug, Default)]
pub struct ParleyRetryPolicy;

impl RetryPolicy for ParleyRetryPolicy {
    fn new_session(&self) -> Box<dyn RetrySession> {
        Box::new(ParleyRetrySession::default())
    }
}

/// Per-request state of [`ParleyRetryPolicy`].
#[derive(Default)]
pub struct ParleyRetrySession {
    inner: DefaultRetrySession,
    write_timeout_retried: bool,
}

impl RetrySession for ParleyRetrySession {
    fn decide_should_retry(&mut self, info: RequestInfo) -> RetryDecision {
        if let RequestAttemptError::DbError(DbError::WriteTimeout { write_type, .. }, _) =
            info.error
        {
            let serial = matches!(
                info.consistency,
                Consistency::Serial | Consistency::LocalSerial
            );
            if retry_write_timeout(
                info.is_idempotent,
                serial,
                write_type,
                self.write_timeout_retried,
            ) {
                self.write_timeout_retried = true;
                return RetryDecision::RetrySameTarget(None);
            }
            return RetryDecision::DontRetry;
        }
        self.inner.decide_should_retry(info)
    }

    fn reset(&mut self) {
        self.inner.reset();
        self.write_timeout_retried = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_idempotent_plain_writes_retry_once() {
        for wt in [
            WriteType::Simple,
            WriteType::Batch,
            WriteType::UnloggedBatch,
            WriteType::BatchLog,
        ] {
            assert!(retry_write_timeout(true, false, &wt, false), "{wt:?}");
            assert!(!retry_write_timeout(true, false, &wt, true), "{wt:?} twice");
            assert!(
                !retry_write_timeout(false, false, &wt, false),
                "{wt:?} non-idempotent"
            );
            assert!(
                !retry_write_timeout(true, true, &wt, false),
                "{wt:?} serial"
            );
        }
        assert!(!retry_write_timeout(true, false, &WriteType::Cas, false));
        assert!(!retry_write_timeout(
            true,
            false,
            &WriteType::Counter,
            false
        ));
    }
}
