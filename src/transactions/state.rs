//! One transactional id's state and its transitions (Kafka's TransactionMetadata), pure.
//!
//! Empty -> Ongoing (partitions added) -> PrepareCommit | PrepareAbort (EndTxn, a timeout, a
//! new producer instance) -> CompleteCommit | CompleteAbort (every partition has its marker)
//! -> Ongoing again with the next transaction. A transition returns the new state; the
//! coordinator stores it in `__transaction_state` before it takes effect.

use std::collections::BTreeSet;

use kafka_protocol::error::ResponseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnStatus {
    Empty = 0,
    Ongoing = 1,
    PrepareCommit = 2,
    PrepareAbort = 3,
    CompleteCommit = 4,
    CompleteAbort = 5,
}

impl TxnStatus {
    pub fn from_code(code: i8) -> Option<TxnStatus> {
        Some(match code {
            0 => TxnStatus::Empty,
            1 => TxnStatus::Ongoing,
            2 => TxnStatus::PrepareCommit,
            3 => TxnStatus::PrepareAbort,
            4 => TxnStatus::CompleteCommit,
            5 => TxnStatus::CompleteAbort,
            _ => return None,
        })
    }

    /// The names DescribeTransactions and ListTransactions use.
    pub fn name(self) -> &'static str {
        match self {
            TxnStatus::Empty => "Empty",
            TxnStatus::Ongoing => "Ongoing",
            TxnStatus::PrepareCommit => "PrepareCommit",
            TxnStatus::PrepareAbort => "PrepareAbort",
            TxnStatus::CompleteCommit => "CompleteCommit",
            TxnStatus::CompleteAbort => "CompleteAbort",
        }
    }

    pub fn is_prepared(self) -> bool {
        matches!(self, TxnStatus::PrepareCommit | TxnStatus::PrepareAbort)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub producer_id: i64,
    pub epoch: i16,
    pub timeout_ms: i32,
    pub status: TxnStatus,
    /// (topic, partition) of the current transaction.
    pub partitions: BTreeSet<(String, i32)>,
    pub start_ms: i64,
    pub last_update_ms: i64,
}

/// What EndTxn asks of the coordinator.
#[derive(Debug, PartialEq, Eq)]
pub enum EndStep {
    /// Store this Prepare state, write the markers, then complete.
    Prepare(TxnMetadata),
    /// A retry of an EndTxn that already completed: answer success.
    AlreadyDone,
}

impl TxnMetadata {
    pub fn new(producer_id: i64, timeout_ms: i32, now_ms: i64) -> Self {
        Self {
            producer_id,
            epoch: 0,
            timeout_ms,
            status: TxnStatus::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now_ms,
        }
    }

    fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), ResponseError> {
        if producer_id != self.producer_id {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if epoch != self.epoch {
            return Err(ResponseError::ProducerFenced);
        }
        Ok(())
    }

    /// A new producer instance (InitProducerId) takes over: the epoch goes up (fencing the
    /// old one) and the id starts a fresh, empty state. `None` when the epoch is exhausted:
    /// the caller allocates a new producer id. An ongoing transaction must be aborted first.
    pub fn reinitialized(
        &self,
        timeout_ms: i32,
        now_ms: i64,
    ) -> Result<Option<Self>, ResponseError> {
        match self.status {
            TxnStatus::PrepareCommit | TxnStatus::PrepareAbort => {
                return Err(ResponseError::ConcurrentTransactions)
            }
            TxnStatus::Ongoing => return Err(ResponseError::ConcurrentTransactions),
            _ => {}
        }
        if self.epoch >= i16::MAX - 1 {
            return Ok(None);
        }
        Ok(Some(Self {
            producer_id: self.producer_id,
            epoch: self.epoch + 1,
            timeout_ms,
            status: TxnStatus::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now_ms,
        }))
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn. `None` when nothing changes (all added already).
    pub fn with_partitions(
        &self,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        now_ms: i64,
    ) -> Result<Option<Self>, ResponseError> {
        self.check_producer(producer_id, epoch)?;
        if self.status.is_prepared() {
            return Err(ResponseError::ConcurrentTransactions);
        }
        let ongoing = self.status == TxnStatus::Ongoing;
        if ongoing && partitions.iter().all(|p| self.partitions.contains(p)) {
            return Ok(None);
        }
        let mut next = self.clone();
        if !ongoing {
            next.partitions.clear();
            next.start_ms = now_ms;
        }
        next.status = TxnStatus::Ongoing;
        next.partitions.extend(partitions.iter().cloned());
        next.last_update_ms = now_ms;
        Ok(Some(next))
    }

    /// EndTxn.
    pub fn ended(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        now_ms: i64,
    ) -> Result<EndStep, ResponseError> {
        self.check_producer(producer_id, epoch)?;
        match (self.status, commit) {
            (TxnStatus::Ongoing, _) => Ok(EndStep::Prepare(self.prepared(commit, now_ms))),
            (TxnStatus::CompleteCommit, true) | (TxnStatus::CompleteAbort, false) => {
                Ok(EndStep::AlreadyDone)
            }
            (TxnStatus::PrepareCommit, true) | (TxnStatus::PrepareAbort, false) => {
                Err(ResponseError::ConcurrentTransactions)
            }
            _ => Err(ResponseError::InvalidTxnState),
        }
    }

    /// The Prepare state of ending the ongoing transaction.
    pub fn prepared(&self, commit: bool, now_ms: i64) -> Self {
        let mut next = self.clone();
        next.status = if commit {
            TxnStatus::PrepareCommit
        } else {
            TxnStatus::PrepareAbort
        };
        next.last_update_ms = now_ms;
        next
    }

    /// The coordinator aborts a transaction that outlived its timeout, or one a new producer
    /// instance interrupts: with the epoch bumped, so the old instance is fenced.
    pub fn fenced_abort(&self, now_ms: i64) -> Self {
        let mut next = self.prepared(false, now_ms);
        next.epoch = self.epoch.saturating_add(1);
        next
    }

    /// Every marker is written.
    pub fn completed(&self, now_ms: i64) -> Self {
        let mut next = self.clone();
        next.status = match self.status {
            TxnStatus::PrepareCommit => TxnStatus::CompleteCommit,
            _ => TxnStatus::CompleteAbort,
        };
        next.partitions.clear();
        next.last_update_ms = now_ms;
        next
    }

    pub fn timed_out(&self, now_ms: i64) -> bool {
        self.status == TxnStatus::Ongoing
            && self.start_ms >= 0
            && now_ms - self.start_ms > i64::from(self.timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(list: &[(&str, i32)]) -> Vec<(String, i32)> {
        list.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    #[test]
    fn a_transaction_runs_its_course() {
        let empty = TxnMetadata::new(7, 1000, 0);
        let ongoing = empty
            .with_partitions(7, 0, &parts(&[("a", 0)]), 5)
            .expect("added")
            .expect("changed");
        assert_eq!((ongoing.status, ongoing.start_ms), (TxnStatus::Ongoing, 5));
        assert_eq!(
            ongoing.with_partitions(7, 0, &parts(&[("a", 0)]), 6),
            Ok(None)
        );
        let EndStep::Prepare(prepared) = ongoing.ended(7, 0, true, 10).expect("ends") else {
            panic!("prepares");
        };
        assert_eq!(prepared.status, TxnStatus::PrepareCommit);
        assert_eq!(
            prepared.with_partitions(7, 0, &parts(&[("b", 0)]), 11),
            Err(ResponseError::ConcurrentTransactions)
        );
        let done = prepared.completed(12);
        assert_eq!(done.status, TxnStatus::CompleteCommit);
        assert!(done.partitions.is_empty());
        assert_eq!(done.ended(7, 0, true, 13), Ok(EndStep::AlreadyDone));
        assert_eq!(
            done.ended(7, 0, false, 13),
            Err(ResponseError::InvalidTxnState)
        );
    }

    #[test]
    fn old_epochs_are_fenced_and_timeouts_abort_with_a_new_epoch() {
        let empty = TxnMetadata::new(7, 1000, 0);
        let next = empty.reinitialized(1000, 1).expect("ok").expect("same id");
        assert_eq!(next.epoch, 1);
        assert_eq!(
            next.with_partitions(7, 0, &parts(&[("a", 0)]), 2),
            Err(ResponseError::ProducerFenced)
        );
        assert_eq!(
            next.with_partitions(8, 1, &parts(&[("a", 0)]), 2),
            Err(ResponseError::InvalidProducerIdMapping)
        );
        let ongoing = next
            .with_partitions(7, 1, &parts(&[("a", 0)]), 2)
            .expect("ok")
            .expect("changed");
        assert!(!ongoing.timed_out(1002));
        assert!(ongoing.timed_out(1003));
        let aborting = ongoing.fenced_abort(1003);
        assert_eq!(
            (aborting.status, aborting.epoch),
            (TxnStatus::PrepareAbort, 2)
        );
        assert_eq!(
            ongoing.reinitialized(1000, 5),
            Err(ResponseError::ConcurrentTransactions)
        );
    }
}
