//! Recording a source as received (`dump_file`): one file per source connection, named by
//! expanding the mount's strftime pattern in local time when the source connects. Only whole
//! frames/pages are written (tags and garbage are not), so every recording is a playable
//! file; each is flushed and synced when its source ends, and a crash can only cut short
//! the recording in progress, never an earlier one (they are separate, closed files).

use std::{
    fmt::Write as _,
    io,
    path::{Path, PathBuf},
};

use chrono::format::{Item, StrftimeItems};
use tokio::io::{AsyncWriteExt, BufWriter};

/// Checks a `dump_file` pattern at config load.
pub fn validate_pattern(pattern: &str) -> Result<(), String> {
    if StrftimeItems::new(pattern).any(|i| matches!(i, Item::Error)) {
        return Err(format!("dump_file {pattern:?}: invalid strftime pattern"));
    }
    Ok(())
}

/// The file name for a recording that starts now (`pattern` already validated).
pub fn expand(pattern: &str) -> String {
    let mut out = String::new();
    if write!(out, "{}", chrono::Local::now().format(pattern)).is_err() {
        // Unreachable for a validated pattern; keep the literal rather than fail.
        return pattern.to_string();
    }
    out
}

#[derive(Debug)]
pub struct Recording {
    path: PathBuf,
    file: BufWriter<tokio::fs::File>,
    bytes: u64,
}

impl Recording {
    /// Creates the next recording file for `pattern`; never overwrites: `name-1.mp3`,
    /// `name-2.mp3`, ... when a file of that name exists.
    pub async fn create(pattern: &str) -> io::Result<Recording> {
        let base = PathBuf::from(expand(pattern));
        if let Some(dir) = base.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await?;
        }
        for n in 0..1000u32 {
            let path = numbered(&base, n);
            match tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .await
            {
                Ok(file) => {
                    return Ok(Recording {
                        path,
                        file: BufWriter::with_capacity(64 * 1024, file),
                        bytes: 0,
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{}: 1000 recordings of that name exist", base.display()),
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data).await?;
        self.bytes += data.len() as u64;
        Ok(())
    }

    /// Flushes and syncs; returns the bytes recorded.
    pub async fn finish(mut self) -> io::Result<u64> {
        self.file.flush().await?;
        self.file.get_ref().sync_all().await?;
        Ok(self.bytes)
    }
}

fn numbered(base: &Path, n: u32) -> PathBuf {
    if n == 0 {
        return base.to_path_buf();
    }
    let stem = base
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("recording");
    let name = match base.extension().and_then(|e| e.to_str()) {
        Some(ext) => format!("{stem}-{n}.{ext}"),
        None => format!("{stem}-{n}"),
    };
    base.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert!(validate_pattern("rec/%Y-%m-%d_%H%M%S.mp3").is_ok());
        assert!(validate_pattern("rec/%Q.mp3").is_err());
        let name = expand("x-%Y.mp3");
        assert!(name.starts_with("x-20") && name.ends_with(".mp3"), "{name}");
        assert_eq!(
            numbered(Path::new("a/b.mp3"), 2),
            PathBuf::from("a/b-2.mp3")
        );
    }
}
