//! Training turns as jobs: `POST /v1/train` answers at once with a job, and the turn (25–60 s)
//! runs behind it. The table is in memory (a restarted hub forgets its jobs; the decisions
//! they made are kept on disk) and bounded: at most one queued or running job per model (a
//! model must exist to be queued, so active jobs are at most the models), and at most
//! `train.job_history` finished ones, the oldest evicted first. Pure: no IO, no clock.

use super::TrainError;
use super::service::{Decision, Status};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Mutex;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for the turn before it (one turn runs at a time on the hub).
    Queued,
    /// Training, evaluating and gating.
    Running,
    /// A decision was made (`decision`; the gate may still have refused the candidate).
    Done,
    /// The turn failed (`error`).
    Failed,
}

impl JobState {
    fn active(self) -> bool {
        matches!(self, Self::Queued | Self::Running)
    }
}

/// One training turn asked for through the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// `<created_ms>-<sequence>`.
    pub id: String,
    /// The model.
    pub model: String,
    /// Training examples at most (0: `train.max_examples`).
    pub limit: usize,
    /// Where it stands.
    pub state: JobState,
    /// The decision's id (`done`).
    pub decision: Option<String>,
    /// The decision's status (`done`).
    pub decision_status: Option<Status>,
    /// Why it failed (`failed`).
    pub error: Option<String>,
    /// The HTTP status the failure maps to (`failed`): 4xx when nothing could be trained.
    pub error_status: Option<u16>,
    /// When it was asked for, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// When it started running.
    pub started_ms: Option<u64>,
    /// When it ended.
    pub finished_ms: Option<u64>,
}

/// The jobs, newest last.
#[derive(Debug)]
pub struct Jobs {
    table: Mutex<Table>,
    history: usize,
}

#[derive(Debug, Default)]
struct Table {
    jobs: VecDeque<Job>,
    next: u64,
}

impl Jobs {
    /// An empty table keeping `history` finished jobs (at least 1).
    pub fn new(history: usize) -> Self {
        Self {
            table: Mutex::new(Table::default()),
            history: history.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding the lock leaves whole jobs behind: the table stays usable.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a job for `model`, or hands back the model's queued or running one.
    pub fn submit(&self, model: &str, limit: usize, now_ms: u64) -> Result<Job, Box<Job>> {
        let mut t = self.lock();
        if let Some(busy) = t.jobs.iter().find(|j| j.model == model && j.state.active()) {
            return Err(Box::new(busy.clone()));
        }
        t.next += 1;
        let job = Job {
            id: format!("{now_ms:013}-{}", t.next),
            model: model.to_string(),
            limit,
            state: JobState::Queued,
            decision: None,
            decision_status: None,
            error: None,
            error_status: None,
            created_ms: now_ms,
            started_ms: None,
            finished_ms: None,
        };
        t.jobs.push_back(job.clone());
        self.evict(&mut t);
        Ok(job)
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Job)) {
        let mut t = self.lock();
        if let Some(j) = t.jobs.iter_mut().find(|j| j.id == id) {
            f(j);
        }
        self.evict(&mut t);
    }

    /// The job started running.
    pub fn start(&self, id: &str, now_ms: u64) {
        self.update(id, |j| {
            j.state = JobState::Running;
            j.started_ms = Some(now_ms);
        });
    }

    /// The job ended with a decision or a failure (`status`: its HTTP status).
    pub fn finish(&self, id: &str, result: Result<&Decision, (&TrainError, u16)>, now_ms: u64) {
        self.update(id, |j| {
            j.finished_ms = Some(now_ms);
            match result {
                Ok(d) => {
                    j.state = JobState::Done;
                    j.decision = Some(d.id.clone());
                    j.decision_status = Some(d.status);
                }
                Err((e, status)) => {
                    j.state = JobState::Failed;
                    j.error = Some(e.to_string());
                    j.error_status = Some(status);
                }
            }
        });
    }

    /// One job.
    pub fn get(&self, id: &str) -> Option<Job> {
        self.lock().jobs.iter().find(|j| j.id == id).cloned()
    }

    /// Every job kept, oldest first.
    pub fn list(&self) -> Vec<Job> {
        self.lock().jobs.iter().cloned().collect()
    }

    /// Drops the oldest finished jobs beyond `history`.
    fn evict(&self, t: &mut Table) {
        let mut finished = t.jobs.iter().filter(|j| !j.state.active()).count();
        while finished > self.history {
            if let Some(i) = t.jobs.iter().position(|j| !j.state.active()) {
                t.jobs.remove(i);
            }
            finished -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_active_job_per_model_and_a_bounded_history() {
        let jobs = Jobs::new(2);
        let a = jobs.submit("fashion", 0, 1).expect("queued");
        assert_eq!(a.state, JobState::Queued);
        let busy = jobs.submit("fashion", 0, 2).expect_err("one per model");
        assert_eq!(busy.id, a.id);
        let b = jobs.submit("text", 0, 3).expect("another model");
        jobs.start(&a.id, 4);
        assert_eq!(jobs.get(&a.id).map(|j| j.state), Some(JobState::Running));
        assert!(jobs.submit("fashion", 0, 5).is_err(), "still running");
        let e = TrainError::TooFew { have: 0, need: 20 };
        jobs.finish(&a.id, Err((&e, 422)), 6);
        let failed = jobs.get(&a.id).expect("kept");
        assert_eq!(
            (failed.state, failed.error_status, failed.finished_ms),
            (JobState::Failed, Some(422), Some(6))
        );
        assert!(failed.error.unwrap_or_default().contains("fewer than"));
        // Finished jobs beyond the history go, oldest first; active ones stay.
        let c = jobs.submit("fashion", 0, 7).expect("free again");
        jobs.finish(&c.id, Err((&e, 422)), 8);
        let d = jobs.submit("fashion", 0, 9).expect("free again");
        jobs.finish(&d.id, Err((&e, 422)), 10);
        let ids: Vec<String> = jobs.list().into_iter().map(|j| j.id).collect();
        assert_eq!(ids, vec![b.id.clone(), c.id, d.id], "a evicted, b active");
        assert_eq!(jobs.get(&b.id).map(|j| j.state), Some(JobState::Queued));
    }
}
