//! The control plane's calls to start, stop and read flow logs and captures of a running loop:
//! each start checks on the loop, opens the files on tokio's blocking pool, then installs them on
//! the loop (checking again); each stop takes the output off the loop and closes it off the loop.
//! The protocol and the types are `runtime/observing/control.rs`'s; this module sits above the
//! loop ([`Handle`]) so that the observing module needs neither.

use std::path::PathBuf;
use std::time::Duration;

use super::log_file::{LogDir, OpenMode};

use super::event_loop::Shell;
use super::observing::{
    CaptureStatus, FlowLogStatus, FlowLogStopped, ObserveControlError, ObserveStatus,
    PreparedCapture, PreparedFlowLog,
};
use super::reload::Handle;

/// Runs blocking file work on tokio's blocking pool (the loop shares the runtime's thread).
async fn off_loop<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ObserveControlError> + Send + 'static,
) -> Result<T, ObserveControlError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ObserveControlError::Task(e.to_string()))?
}

async fn on_loop<R: Send + 'static>(
    handle: &Handle,
    f: impl FnOnce(&mut Shell) -> Result<R, ObserveControlError> + Send + 'static,
) -> Result<R, ObserveControlError> {
    handle
        .query(f)
        .await
        .map_err(|_| ObserveControlError::Stopped)?
}

/// The running flow log and captures.
pub async fn status(handle: &Handle) -> Result<ObserveStatus, ObserveControlError> {
    on_loop(handle, |s| Ok(s.observe_status())).await
}

/// Starts a flow log to `target` (`-`, or a file in `dir` opened as `mode` says:
/// [`crate::runtime::log_file`]) with windows of `window`. Refused while one runs (the file is
/// then not touched).
pub async fn start_flow_log(
    handle: &Handle,
    target: String,
    window: Duration,
    dir: LogDir,
    mode: OpenMode,
) -> Result<FlowLogStatus, ObserveControlError> {
    on_loop(handle, |s| s.check_flow_log()).await?;
    let opened = off_loop(move || PreparedFlowLog::open(&target, window, &dir, mode)).await?;
    on_loop(handle, move |s| s.start_flow_log(opened)).await
}

/// Stops the flow log: its open window is closed now and every record is written.
pub async fn stop_flow_log(handle: &Handle) -> Result<FlowLogStopped, ObserveControlError> {
    let stopped = on_loop(handle, |s| s.stop_flow_log()).await?;
    off_loop(move || stopped.finish()).await
}

/// Starts capturing `endpoint` (`VPC/INSTANCE` or `internet/HOST`) to `file` and
/// `file`'s `.nat.pcap` sibling (as `--capture` does), both created new in `dir`
/// ([`crate::runtime::log_file`]). Refused for an unknown endpoint or one captured already (the
/// files are then not touched).
pub async fn start_capture(
    handle: &Handle,
    endpoint: String,
    file: PathBuf,
    dir: LogDir,
) -> Result<CaptureStatus, ObserveControlError> {
    let ep = endpoint.clone();
    let (port, epoch) = on_loop(handle, move |s| Ok((s.check_capture(&ep)?, s.epoch()))).await?;
    let opened =
        off_loop(move || PreparedCapture::open(&endpoint, port, epoch, &file, &dir)).await?;
    on_loop(handle, move |s| s.start_capture(opened)).await
}

/// Stops the capture of `endpoint`; everything it recorded is written. Returns the final numbers.
pub async fn stop_capture(
    handle: &Handle,
    endpoint: String,
) -> Result<CaptureStatus, ObserveControlError> {
    let stopped = on_loop(handle, move |s| s.stop_capture(&endpoint)).await?;
    off_loop(move || stopped.finish()).await
}
