//! PLACEHOLDER (being written by a helper).
use common::error::{ErrorKind, RemoteError};
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub module: String,
    pub path: std::path::PathBuf,
    pub python: String,
    pub workers: usize,
}
#[derive(Clone)]
pub struct Pool;
impl Pool {
    pub fn start(_spec: WorkerSpec) -> Pool {
        Pool
    }
    pub async fn call(
        &self,
        _function: &str,
        _args: Vec<serde_json::Value>,
        _kwargs: serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Value, RemoteError> {
        Err(RemoteError::new(ErrorKind::WorkerFailed, "todo"))
    }
    pub fn restart(&self) {}
    pub fn stop(&self) {}
}
