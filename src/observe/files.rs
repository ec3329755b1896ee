//! The I/O shell's side of observation: opening flow-log outputs and capture files from command
//! line arguments (`--flow-log FILE|-`, `--capture ENDPOINT=FILE`). Not sans-IO; never on the
//! packet path.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{Capture, FlowLogWriter, nat_capture_path};

/// Splits a `--capture` argument, `ENDPOINT=FILE` (`tenant-a/fn-a1=/tmp/fn-a1.pcap`), into the
/// endpoint name and the file. The error says what is wrong and what to write.
pub fn parse_capture_arg(arg: &str) -> Result<(String, PathBuf), String> {
    match arg.split_once('=') {
        Some((endpoint, file))
            if endpoint.contains('/') && !endpoint.ends_with('/') && !file.is_empty() =>
        {
            Ok((endpoint.to_string(), PathBuf::from(file)))
        }
        _ => Err(format!(
            "`{arg}` is not a capture: write ENDPOINT=FILE, e.g. tenant-a/fn-a1=/tmp/fn-a1.pcap \
             (ENDPOINT is VPC/INSTANCE or internet/HOST)"
        )),
    }
}

/// A flow-log output: `-` is stdout, anything else a file (created or truncated).
pub fn open_flow_log(target: &str) -> io::Result<FlowLogWriter<Box<dyn Write + Send>>> {
    let out: Box<dyn Write + Send> = if target == "-" {
        Box::new(io::stdout())
    } else {
        Box::new(File::create(target)?)
    };
    Ok(FlowLogWriter::new(out))
}

/// The two files of one capture: `FILE` (the port's view) and `FILE.nat.pcap` (the far side).
#[derive(Debug)]
pub struct CaptureFiles {
    pub path: PathBuf,
    pub nat_path: PathBuf,
    port: BufWriter<File>,
    nat: BufWriter<File>,
}

impl CaptureFiles {
    /// The capture's two files, opened by the caller (`runtime::log_file` for an API request).
    pub fn from_files(path: &Path, nat_path: PathBuf, port: File, nat: File) -> CaptureFiles {
        CaptureFiles {
            port: BufWriter::new(port),
            nat: BufWriter::new(nat),
            path: path.to_path_buf(),
            nat_path,
        }
    }

    /// Creates (or truncates) both files.
    pub fn create(path: &Path) -> io::Result<CaptureFiles> {
        let nat_path = nat_capture_path(path);
        Ok(CaptureFiles {
            port: BufWriter::new(File::create(path)?),
            nat: BufWriter::new(File::create(&nat_path)?),
            path: path.to_path_buf(),
            nat_path,
        })
    }

    /// Moves what `capture` has buffered into the files and flushes them (so a reader sees whole
    /// records).
    pub fn write(&mut self, capture: &mut Capture) -> io::Result<()> {
        capture.write_pending(&mut self.port, &mut self.nat)?;
        self.port.flush()?;
        self.nat.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_arguments() {
        assert_eq!(
            parse_capture_arg("tenant-a/fn-a1=/tmp/x.pcap"),
            Ok(("tenant-a/fn-a1".to_string(), PathBuf::from("/tmp/x.pcap")))
        );
        assert_eq!(
            parse_capture_arg("internet/web=a=b.pcap").map(|(_, f)| f),
            Ok(PathBuf::from("a=b.pcap"))
        );
        for bad in [
            "fn-a1=/tmp/x.pcap",
            "tenant-a/fn-a1",
            "tenant-a/fn-a1=",
            "tenant-a/=x",
            "",
        ] {
            assert!(parse_capture_arg(bad).is_err(), "{bad}");
        }
    }
}
