//! Why a session refused something, with the gRPC status each reason maps to.

#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    ResourceExhausted(String),
    /// Refused for who asked: already counted and audited (`auth::audit::refuse`).
    #[error("{}", .0.message())]
    Refused(tonic::Status),
}

impl SessionError {
    /// A session already has the most attachments it may (checked before an attachment is built,
    /// and for good by the session's worker).
    pub fn attachments_full(session_id: &str, limit: usize) -> Self {
        SessionError::ResourceExhausted(format!(
            "session {session_id:?} has {limit} attachments, the most it may have (limits.attachments_per_session)"
        ))
    }
}

impl From<SessionError> for tonic::Status {
    fn from(error: SessionError) -> Self {
        match error {
            SessionError::NotFound(m) => tonic::Status::not_found(m),
            SessionError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            SessionError::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
            SessionError::AlreadyExists(m) => tonic::Status::already_exists(m),
            SessionError::Unavailable(m) => tonic::Status::unavailable(m),
            SessionError::ResourceExhausted(m) => tonic::Status::resource_exhausted(m),
            SessionError::Refused(status) => status,
        }
    }
}

impl From<crate::budget::BudgetError> for SessionError {
    fn from(error: crate::budget::BudgetError) -> Self {
        SessionError::ResourceExhausted(error.to_string())
    }
}
