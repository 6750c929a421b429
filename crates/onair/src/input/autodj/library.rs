//! The music folder as a list of tracks: a recursive scan (any depth; symbolic links
//! followed, each directory and file visited once so link loops end; hidden entries
//! skipped) of the audio extensions in [`EXTENSIONS`], with artist, title, album and
//! ReplayGain read from the tags (`lofty`), falling back to the file name.
//!
//! Invariants:
//! - Scanning is blocking work: callers run [`Library::rescan`] on a dedicated thread.
//! - A file whose tags cannot be parsed is logged and left out; nothing stops a scan except
//!   the top folder being unreadable, and even then the previous list stays.
//! - Rescans reuse what they know of files whose size and modification time are unchanged,
//!   so a rescan of a large library costs a directory walk, not a re-read of every file.
//! - A track's id is a hash of its path: the same across rescans and restarts, and below
//!   2^53 so JSON clients read it exactly.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Instant, SystemTime},
};

use lofty::prelude::{Accessor, ItemKey, TaggedFileExt};
use serde::Serialize;

use super::naming;

/// File extensions the scan picks up (compared case-insensitively).
pub const EXTENSIONS: &[&str] = &["mp3", "flac", "ogg", "opus", "m4a", "aac", "wav"];
/// Deeper folders are not entered (a bound on the walk's stack, far beyond real libraries).
pub const MAX_DEPTH: usize = 64;
/// A progress line is logged every this many files.
const PROGRESS_EVERY: u64 = 5_000;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LibraryTrack {
    pub id: u64,
    pub path: PathBuf,
    pub artist: Option<String>,
    pub title: String,
    pub album: Option<String>,
    pub replaygain_db: Option<f64>,
    /// "Artist - Title" as announced.
    pub display: String,
}

/// Scan progress, readable while a scan runs.
#[derive(Debug, Default)]
pub struct ScanProgress {
    pub scanning: AtomicBool,
    /// Audio files found by the current (or last) scan's directory walk.
    pub files_seen: AtomicU64,
    /// Of those, files whose tags have been read (or taken from the previous scan).
    pub files_done: AtomicU64,
    /// Audio files left out in the last scan (unreadable tags, corrupt).
    pub skipped: AtomicU64,
    pub scans_done: AtomicU64,
}

/// What a rescan changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanReport {
    pub tracks: usize,
    pub added: usize,
    pub removed: usize,
    pub skipped: usize,
}

#[derive(Debug, Clone)]
struct Known {
    size: u64,
    modified: Option<SystemTime>,
    /// `None`: the file could not be read last time (not retried until it changes).
    track: Option<LibraryTrack>,
}

#[derive(Debug)]
pub struct Library {
    pub dir: PathBuf,
    tracks: RwLock<Arc<Vec<LibraryTrack>>>,
    known: Mutex<HashMap<PathBuf, Known>>,
    pub progress: ScanProgress,
}

impl Library {
    pub fn new(dir: PathBuf) -> Library {
        Library {
            dir,
            tracks: RwLock::new(Arc::new(Vec::new())),
            known: Mutex::new(HashMap::new()),
            progress: ScanProgress::default(),
        }
    }

    /// The tracks as of the last scan, sorted by path.
    pub fn snapshot(&self) -> Arc<Vec<LibraryTrack>> {
        self.tracks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn get(&self, id: u64) -> Option<LibraryTrack> {
        self.snapshot().iter().find(|t| t.id == id).cloned()
    }

    /// A track by path: absolute, or relative to the music folder.
    pub fn find_path(&self, path: &Path) -> Option<LibraryTrack> {
        let full = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.dir.join(path)
        };
        self.snapshot().iter().find(|t| t.path == full).cloned()
    }

    /// Walks the folder and updates the list (blocking).
    pub fn rescan(&self) -> ScanReport {
        let p = &self.progress;
        p.scanning.store(true, Ordering::Release);
        p.files_seen.store(0, Ordering::Relaxed);
        p.files_done.store(0, Ordering::Relaxed);
        let started = Instant::now();
        let files = walk(&self.dir, p);
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let mut next: HashMap<PathBuf, Known> = HashMap::with_capacity(files.len());
        for (path, size, modified) in files {
            let done = p.files_done.fetch_add(1, Ordering::Relaxed) + 1;
            if done.is_multiple_of(PROGRESS_EVERY) {
                tracing::info!(dir = %self.dir.display(), done, of = p.files_seen.load(Ordering::Relaxed), "library scan: reading tags");
            }
            let k = match known.remove(&path) {
                Some(k) if k.size == size && k.modified == modified => k,
                _ => Known {
                    size,
                    modified,
                    track: match read_track(&path) {
                        Ok(t) => Some(t),
                        Err(e) => {
                            tracing::warn!(path = %path.display(), "library: skipping unreadable file: {e}");
                            None
                        }
                    },
                },
            };
            next.insert(path, k);
        }
        *known = next;
        let mut tracks: Vec<LibraryTrack> =
            known.values().filter_map(|k| k.track.clone()).collect();
        let skipped = known.len() - tracks.len();
        drop(known);
        tracks.sort_by(|a, b| a.path.cmp(&b.path));
        let old = self.snapshot();
        let old_ids: HashSet<u64> = old.iter().map(|t| t.id).collect();
        let new_ids: HashSet<u64> = tracks.iter().map(|t| t.id).collect();
        let report = ScanReport {
            tracks: tracks.len(),
            added: new_ids.difference(&old_ids).count(),
            removed: old_ids.difference(&new_ids).count(),
            skipped,
        };
        *self.tracks.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(tracks);
        p.skipped.store(skipped as u64, Ordering::Relaxed);
        p.scans_done.fetch_add(1, Ordering::Relaxed);
        p.scanning.store(false, Ordering::Release);
        if report.added + report.removed > 0 || p.scans_done.load(Ordering::Relaxed) == 1 {
            tracing::info!(dir = %self.dir.display(), tracks = report.tracks, added = report.added, removed = report.removed, skipped = report.skipped, seconds = started.elapsed().as_secs_f64(), "library scanned");
        }
        report
    }
}

/// Stable id of a path (FNV-1a, 53 bits).
pub fn track_id(path: &Path) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h & ((1 << 53) - 1)
}

pub fn is_audio_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Audio files under `dir`: (path, size, modified). Symbolic links are followed; a
/// directory or file reached twice (a link loop, two links to one file) is taken once.
fn walk(dir: &Path, progress: &ScanProgress) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut out = Vec::new();
    let mut seen_dirs: HashSet<FileKey> = HashSet::new();
    let mut seen_files: HashSet<FileKey> = HashSet::new();
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&d) else {
            tracing::warn!(dir = %d.display(), "library: cannot read folder");
            continue;
        };
        if !seen_dirs.insert(file_key(&d, &meta)) {
            continue;
        }
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(dir = %d.display(), "library: cannot read folder: {e}");
                continue;
            }
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.as_encoded_bytes().first() == Some(&b'.') {
                continue;
            }
            let path = entry.path();
            // Follows links: a dangling link is skipped like any unreadable entry.
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                if depth + 1 < MAX_DEPTH {
                    stack.push((path, depth + 1));
                }
                continue;
            }
            if !meta.is_file() || !is_audio_name(&path) {
                continue;
            }
            if !seen_files.insert(file_key(&path, &meta)) {
                continue;
            }
            let n = progress.files_seen.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_multiple_of(PROGRESS_EVERY) {
                tracing::info!(dir = %dir.display(), files = n, "library scan in progress");
            }
            out.push((path, meta.len(), meta.modified().ok()));
        }
    }
    out
}

#[cfg(unix)]
type FileKey = (u64, u64);
#[cfg(not(unix))]
type FileKey = PathBuf;

#[cfg(unix)]
fn file_key(_path: &Path, meta: &std::fs::Metadata) -> FileKey {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn file_key(path: &Path, _meta: &std::fs::Metadata) -> FileKey {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Reads one file's tags (blocking).
pub fn read_track(path: &Path) -> Result<LibraryTrack, lofty::error::FileParseError> {
    let tagged = lofty::read_from_path(path)?;
    let tag = tagged.primary_tag().or_else(|| tagged.first_tag());
    let text = |v: Option<std::borrow::Cow<'_, str>>| {
        v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
    };
    let (mut artist, mut title, mut album, mut replaygain_db) = (None, None, None, None);
    if let Some(tag) = tag {
        artist = text(tag.artist());
        title = text(tag.title());
        album = text(tag.album());
        replaygain_db = tag
            .get_string(ItemKey::ReplayGainTrackGain)
            .and_then(naming::parse_replaygain);
    }
    let title = match title {
        Some(t) => t,
        None => {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (a, t) = naming::parse_file_name(&stem);
            if artist.is_none() {
                artist = a;
            }
            t
        }
    };
    Ok(LibraryTrack {
        id: track_id(path),
        path: path.to_path_buf(),
        display: naming::display_title(artist.as_deref(), &title),
        artist,
        title,
        album,
        replaygain_db,
    })
}
