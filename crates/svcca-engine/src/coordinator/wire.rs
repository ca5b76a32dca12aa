//! Between the state machine's types and the wire: proto messages and gRPC status codes.
//!
//! Errors stay structural across gRPC: each [`SchedulerError`] maps to one status code, and
//! [`code_is_retryable`] is the one place that reads a code back as retryable or not. Job and task
//! failures carry an explicit `retryable` flag in their messages, never inferred from text.

use svcca_proto::v1;
use tonic::Status;

pub use crate::error::code_is_retryable;

use super::state::{JobFailure, JobInfo, JobState, SchedulerError};
use crate::driver::{JobSummary, Progress, TaskFailure};

impl From<SchedulerError> for Status {
    fn from(error: SchedulerError) -> Self {
        let message = error.to_string();
        match error {
            SchedulerError::VersionMismatch { .. } => Status::failed_precondition(message),
            SchedulerError::UnknownWorker { .. } | SchedulerError::UnknownJob { .. } => {
                Status::not_found(message)
            }
            SchedulerError::LeaseNotHeld { .. } => Status::failed_precondition(message),
            SchedulerError::NotJobOwner { .. } | SchedulerError::WorkerDropped { .. } => {
                Status::permission_denied(message)
            }
            SchedulerError::InvalidResult { .. } => Status::invalid_argument(message),
        }
    }
}

/// A job spec the factory refused: bad input is `INVALID_ARGUMENT`, a failure that may pass on a
/// second try (the dataset's store unreachable) is `UNAVAILABLE`.
pub(crate) fn task_failure_to_status(failure: &TaskFailure) -> Status {
    match failure {
        TaskFailure::Fatal { .. } => Status::invalid_argument(failure.to_string()),
        TaskFailure::Retryable { .. } => Status::unavailable(failure.to_string()),
    }
}

pub(crate) fn state_to_proto(state: JobState) -> v1::JobState {
    match state {
        JobState::Running => v1::JobState::Running,
        JobState::Finishing => v1::JobState::Finishing,
        JobState::Succeeded => v1::JobState::Succeeded,
        JobState::Failed => v1::JobState::Failed,
        JobState::Cancelled => v1::JobState::Cancelled,
    }
}

pub(crate) fn info_to_proto(info: &JobInfo) -> v1::JobInfo {
    let summary = info.summary.clone().unwrap_or_default();
    v1::JobInfo {
        job_id: info.job_id.clone(),
        state: state_to_proto(info.state) as i32,
        tasks_done: info.progress.done,
        tasks_total: info.progress.total,
        failure: info.failure.as_ref().map(|f| v1::JobFailure {
            message: f.message.clone(),
            retryable: f.retryable,
        }),
        output_url: summary.output_url,
        summary_lines: summary.lines,
        workers_alive: info.workers_alive,
    }
}

/// Reads a job snapshot sent by a coordinator. An unknown state (a newer coordinator) is an error
/// rather than a guess.
pub(crate) fn info_from_proto(info: v1::JobInfo) -> Result<JobInfo, Status> {
    let state = match v1::JobState::try_from(info.state) {
        Ok(v1::JobState::Running) => JobState::Running,
        Ok(v1::JobState::Finishing) => JobState::Finishing,
        Ok(v1::JobState::Succeeded) => JobState::Succeeded,
        Ok(v1::JobState::Failed) => JobState::Failed,
        Ok(v1::JobState::Cancelled) => JobState::Cancelled,
        Ok(v1::JobState::Unspecified) | Err(_) => {
            return Err(Status::internal(format!(
                "job {} has an unknown state {}",
                info.job_id, info.state
            )));
        }
    };
    let summary = (state == JobState::Succeeded).then(|| JobSummary {
        output_url: info.output_url.clone(),
        lines: info.summary_lines.clone(),
    });
    Ok(JobInfo {
        job_id: info.job_id,
        state,
        progress: Progress {
            done: info.tasks_done,
            total: info.tasks_total,
        },
        failure: info.failure.map(|f| JobFailure {
            message: f.message,
            retryable: f.retryable,
        }),
        summary,
        workers_alive: info.workers_alive,
    })
}
