//! Where backups go: a local directory (`DIR` or `file://DIR`), S3-compatible
//! object storage (`s3://bucket/prefix`, through `object_store`), or standard
//! output/input (`-`).
//!
//! A directory or S3 target holds, per backup, the stream `<id>.qgb` and its
//! manifest `<id>.manifest.json`; the manifest is written last, so a backup
//! exists exactly when its manifest does. Writes go through [`Upload`]: a
//! directory writes `<name>.partial` and renames it into place; S3 uses a
//! multipart upload (8 MiB parts, one in memory at a time) that only becomes
//! visible when completed.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjPath;
use object_store::{GetOptions, GetRange, MultipartUpload, ObjectStore, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Suffix of stream files.
pub const STREAM_SUFFIX: &str = ".qgb";
/// Suffix of manifest files.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";
/// S3 multipart part size (S3 needs at least 5 MiB for all but the last part).
pub const PART_SIZE: usize = 8 << 20;

/// S3 settings beyond the `AWS_*` environment.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct S3Options {
    /// Endpoint of an S3-compatible server (MinIO, Ceph, moto, ...); `http://`
    /// endpoints are allowed. Default: `AWS_ENDPOINT_URL`/`AWS_ENDPOINT`, else AWS.
    pub endpoint: Option<String>,
}

/// A parsed target.
pub enum Target {
    Dir(PathBuf),
    S3(S3Target),
    /// Standard output (writing) or standard input (reading).
    Stdio,
}

/// An S3 bucket and prefix with its client and a small runtime to drive it.
pub struct S3Target {
    url: String,
    store: Arc<AmazonS3>,
    prefix: String,
    rt: Arc<tokio::runtime::Runtime>,
}

impl Target {
    /// Parse `-`, `s3://bucket[/prefix]`, `file://DIR` or `DIR`.
    pub fn parse(spec: &str, s3: &S3Options) -> Result<Target> {
        if spec.is_empty() {
            return Err(Error::usage("empty backup target"));
        }
        if spec == "-" {
            return Ok(Target::Stdio);
        }
        if let Some(rest) = spec.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::usage(format!(
                    "bad target `{spec}`: expected s3://BUCKET[/PREFIX]"
                )));
            }
            let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
            if std::env::var_os("AWS_REGION").is_none()
                && std::env::var_os("AWS_DEFAULT_REGION").is_none()
            {
                b = b.with_region("us-east-1");
            }
            if let Some(ep) = &s3.endpoint {
                b = b
                    .with_endpoint(ep)
                    .with_allow_http(ep.starts_with("http://"));
            } else if let Ok(ep) =
                std::env::var("AWS_ENDPOINT_URL").or_else(|_| std::env::var("AWS_ENDPOINT"))
            {
                b = b.with_allow_http(ep.starts_with("http://"));
            }
            let store = b
                .build()
                .map_err(|e| Error::usage(format!("cannot use S3 target {spec}: {e}")))?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::io("start the I/O runtime for", spec, e))?;
            return Ok(Target::S3(S3Target {
                url: format!("s3://{bucket}/{}", prefix.trim_matches('/')),
                store: Arc::new(store),
                prefix: prefix.trim_matches('/').to_string(),
                rt: Arc::new(rt),
            }));
        }
        if spec.contains("://") && !spec.starts_with("file://") {
            return Err(Error::usage(format!(
                "unsupported target `{spec}`: use a directory, file://DIR, s3://BUCKET/PREFIX or -"
            )));
        }
        let dir = spec.strip_prefix("file://").unwrap_or(spec);
        Ok(Target::Dir(PathBuf::from(dir)))
    }

    /// How the target is shown in output and audit events (no credentials).
    pub fn display(&self) -> String {
        match self {
            Target::Dir(p) => p.display().to_string(),
            Target::S3(s) => s.url.trim_end_matches('/').to_string(),
            Target::Stdio => "-".into(),
        }
    }

    pub fn is_stdio(&self) -> bool {
        matches!(self, Target::Stdio)
    }

    fn err(&self, reason: impl std::fmt::Display) -> Error {
        Error::Target {
            target: self.display(),
            reason: reason.to_string(),
        }
    }

    fn no_catalog(&self) -> Error {
        Error::usage(
            "standard input/output has no catalog of backups; use a directory or s3:// target",
        )
    }

    /// Names of the files in the target (not recursive). A directory that
    /// does not exist yet is empty.
    pub fn list(&self) -> Result<Vec<String>> {
        match self {
            Target::Dir(dir) => {
                let rd = match std::fs::read_dir(dir) {
                    Ok(rd) => rd,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                    Err(e) => return Err(Error::io("list", dir.display(), e)),
                };
                let mut out = Vec::new();
                for entry in rd {
                    let entry = entry.map_err(|e| Error::io("list", dir.display(), e))?;
                    if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                        out.push(entry.file_name().to_string_lossy().into_owned());
                    }
                }
                out.sort();
                Ok(out)
            }
            Target::S3(s) => {
                let prefix = s.dir_path();
                let mut out = Vec::new();
                let metas: Vec<_> =
                    s.rt.block_on(s.store.list(prefix.as_ref()).collect::<Vec<_>>());
                for m in metas {
                    let m = m.map_err(|e| self.err(e))?;
                    let name = m.location.filename().unwrap_or_default().to_string();
                    let in_prefix = match &prefix {
                        Some(p) => m
                            .location
                            .prefix_match(p)
                            .map(|mut i| i.next().is_some() && i.next().is_none())
                            .unwrap_or(false),
                        None => m.location.parts().count() == 1,
                    };
                    if in_prefix && !name.is_empty() {
                        out.push(name);
                    }
                }
                out.sort();
                Ok(out)
            }
            Target::Stdio => Err(self.no_catalog()),
        }
    }

    /// A whole (small) file.
    pub fn read_all(&self, name: &str) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.open_read(name, 0)?
            .read_to_end(&mut buf)
            .map_err(|e| self.err(format!("cannot read {name}: {e}")))?;
        Ok(buf)
    }

    /// Size of a file, `None` when it does not exist.
    pub fn size(&self, name: &str) -> Result<Option<u64>> {
        match self {
            Target::Dir(dir) => match std::fs::metadata(dir.join(name)) {
                Ok(m) => Ok(Some(m.len())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::io("stat", dir.join(name).display(), e)),
            },
            Target::S3(s) => match s.rt.block_on(s.store.head(&s.path(name))) {
                Ok(m) => Ok(Some(m.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.err(e)),
            },
            Target::Stdio => Err(self.no_catalog()),
        }
    }

    /// Read a file from byte `offset` on, streaming.
    pub fn open_read(&self, name: &str, offset: u64) -> Result<Box<dyn Read>> {
        match self {
            Target::Dir(dir) => {
                use std::io::Seek;
                let path = dir.join(name);
                let mut f = std::fs::File::open(&path).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Error::Chain(format!("{} is missing", path.display()))
                    } else {
                        Error::io("open", path.display(), e)
                    }
                })?;
                if offset > 0 {
                    f.seek(std::io::SeekFrom::Start(offset))
                        .map_err(|e| Error::io("seek in", path.display(), e))?;
                }
                Ok(Box::new(std::io::BufReader::with_capacity(256 << 10, f)))
            }
            Target::S3(s) => {
                let opts = GetOptions {
                    range: (offset > 0).then_some(GetRange::Offset(offset)),
                    ..Default::default()
                };
                let got =
                    s.rt.block_on(s.store.get_opts(&s.path(name), opts))
                        .map_err(|e| match e {
                            object_store::Error::NotFound { .. } => {
                                Error::Chain(format!("{}/{name} is missing", self.display()))
                            }
                            e => self.err(format!("cannot read {name}: {e}")),
                        })?;
                Ok(Box::new(S3Reader {
                    rt: s.rt.clone(),
                    stream: got.into_stream(),
                    chunk: bytes::Bytes::new(),
                }))
            }
            Target::Stdio => Ok(Box::new(std::io::BufReader::with_capacity(
                256 << 10,
                std::io::stdin(),
            ))),
        }
    }

    /// Start writing a file; it appears only when [`Upload::finish`] succeeds.
    pub fn create(&self, name: &str) -> Result<Box<dyn Upload>> {
        match self {
            Target::Dir(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::io("create directory", dir.display(), e))?;
                let final_path = dir.join(name);
                let partial = dir.join(format!("{name}.partial"));
                let f = std::fs::File::create(&partial)
                    .map_err(|e| Error::io("create", partial.display(), e))?;
                Ok(Box::new(DirUpload {
                    out: Some(std::io::BufWriter::with_capacity(1 << 20, f)),
                    partial,
                    final_path,
                    written: 0,
                    kicked: 0,
                }))
            }
            Target::S3(s) => {
                let path = s.path(name);
                let upload =
                    s.rt.block_on(s.store.put_multipart(&path))
                        .map_err(|e| self.err(format!("cannot start uploading {name}: {e}")))?;
                Ok(Box::new(S3Upload {
                    rt: s.rt.clone(),
                    upload: Some(upload),
                    buf: Vec::with_capacity(PART_SIZE),
                    name: format!("{}/{name}", self.display()),
                }))
            }
            Target::Stdio => Ok(Box::new(StdoutUpload {
                out: std::io::BufWriter::with_capacity(1 << 20, std::io::stdout()),
            })),
        }
    }

    /// Write a small file in one step (atomically: a reader sees all or nothing).
    pub fn put_small(&self, name: &str, bytes: &[u8]) -> Result<()> {
        match self {
            Target::S3(s) => {
                s.rt.block_on(s.store.put(&s.path(name), PutPayload::from(bytes.to_vec())))
                    .map(|_| ())
                    .map_err(|e| self.err(format!("cannot write {name}: {e}")))
            }
            _ => {
                let mut up = self.create(name)?;
                up.write_all(bytes)
                    .map_err(|e| self.err(format!("cannot write {name}: {e}")))?;
                up.finish()
            }
        }
    }

    /// Remove a file (a missing file is not an error).
    pub fn delete(&self, name: &str) -> Result<()> {
        match self {
            Target::Dir(dir) => match std::fs::remove_file(dir.join(name)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io("remove", dir.join(name).display(), e)),
            },
            Target::S3(s) => match s.rt.block_on(s.store.delete(&s.path(name))) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(self.err(format!("cannot remove {name}: {e}"))),
            },
            Target::Stdio => Err(self.no_catalog()),
        }
    }

    /// Age of a file in seconds, when the target knows it.
    pub fn age_secs(&self, name: &str) -> Option<u64> {
        match self {
            Target::Dir(dir) => std::fs::metadata(dir.join(name))
                .ok()?
                .modified()
                .ok()?
                .elapsed()
                .ok()
                .map(|d| d.as_secs()),
            Target::S3(s) => {
                let m = s.rt.block_on(s.store.head(&s.path(name))).ok()?;
                let age =
                    time::OffsetDateTime::now_utc().unix_timestamp() - m.last_modified.timestamp();
                u64::try_from(age).ok()
            }
            Target::Stdio => None,
        }
    }
}

impl S3Target {
    fn dir_path(&self) -> Option<ObjPath> {
        (!self.prefix.is_empty()).then(|| ObjPath::from(self.prefix.as_str()))
    }

    fn path(&self, name: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(name)
        } else {
            ObjPath::from(format!("{}/{name}", self.prefix))
        }
    }
}

/// A file being written to a target.
pub trait Upload: Write + Send {
    /// Make the file visible (flushed and durable where the target allows).
    fn finish(self: Box<Self>) -> Result<()>;
    /// Give up: nothing becomes visible.
    fn abort(self: Box<Self>);
}

struct DirUpload {
    out: Option<std::io::BufWriter<std::fs::File>>,
    partial: PathBuf,
    final_path: PathBuf,
    /// Bytes written, and how far the kernel was asked to start writing back.
    written: u64,
    kicked: u64,
}

/// Start writing back every this many bytes: the final fsync then waits for
/// the tail only, not for the whole stream (a quarter of a full backup's time).
const WRITEBACK_EVERY: u64 = 4 << 20;

impl Write for DirUpload {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let out = self.out.as_mut().expect("open until finished");
        let n = out.write(buf)?;
        self.written += n as u64;
        if self.written - self.kicked >= WRITEBACK_EVERY {
            qg_store::writeback::start(out.get_ref(), self.kicked);
            self.kicked = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.as_mut().expect("open until finished").flush()
    }
}

/// Make the directory entry of `path` durable (the rename that published it).
fn sync_dir(path: &Path) -> Result<()> {
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    qg_store::writeback::sync_dir(dir).map_err(|e| Error::io("sync directory", dir.display(), e))
}

impl Upload for DirUpload {
    fn finish(mut self: Box<Self>) -> Result<()> {
        let out = self.out.take().expect("open until finished");
        let f = out
            .into_inner()
            .map_err(|e| Error::io("write", self.partial.display(), e.into_error()))?;
        f.sync_all()
            .map_err(|e| Error::io("sync", self.partial.display(), e))?;
        drop(f);
        std::fs::rename(&self.partial, &self.final_path)
            .map_err(|e| Error::io("rename into place", self.final_path.display(), e))?;
        sync_dir(&self.final_path)
    }

    fn abort(mut self: Box<Self>) {
        self.out.take();
        let _ = std::fs::remove_file(&self.partial);
    }
}

impl Drop for DirUpload {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

struct StdoutUpload {
    out: std::io::BufWriter<std::io::Stdout>,
}

impl Write for StdoutUpload {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl Upload for StdoutUpload {
    fn finish(mut self: Box<Self>) -> Result<()> {
        self.out
            .flush()
            .map_err(|e| Error::io("write the backup stream to", "standard output", e))
    }

    fn abort(self: Box<Self>) {}
}

struct S3Upload {
    rt: Arc<tokio::runtime::Runtime>,
    upload: Option<Box<dyn MultipartUpload>>,
    buf: Vec<u8>,
    name: String,
}

impl S3Upload {
    fn send_part(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let part = std::mem::replace(&mut self.buf, Vec::with_capacity(PART_SIZE));
        let upload = self.upload.as_mut().expect("open until finished");
        let fut = upload.put_part(PutPayload::from(part));
        self.rt
            .block_on(fut)
            .map_err(|e| std::io::Error::other(format!("uploading a part of {}: {e}", self.name)))
    }
}

impl Write for S3Upload {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = PART_SIZE - self.buf.len();
        let n = room.min(buf.len());
        self.buf.extend_from_slice(&buf[..n]);
        if self.buf.len() == PART_SIZE {
            self.send_part()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Upload for S3Upload {
    fn finish(mut self: Box<Self>) -> Result<()> {
        let name = self.name.clone();
        let target = |e: String| Error::Target {
            target: name.clone(),
            reason: e,
        };
        self.send_part().map_err(|e| target(e.to_string()))?;
        let mut upload = self.upload.take().expect("open until finished");
        self.rt
            .block_on(upload.complete())
            .map(|_| ())
            .map_err(|e| target(format!("cannot complete the upload: {e}")))
    }

    fn abort(mut self: Box<Self>) {
        if let Some(mut u) = self.upload.take() {
            let _ = self.rt.block_on(u.abort());
        }
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        if let Some(mut u) = self.upload.take() {
            let _ = self.rt.block_on(u.abort());
        }
    }
}

struct S3Reader {
    rt: Arc<tokio::runtime::Runtime>,
    stream: BoxStream<'static, object_store::Result<bytes::Bytes>>,
    chunk: bytes::Bytes,
}

impl Read for S3Reader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.rt.block_on(self.stream.next()) {
                Some(Ok(c)) => self.chunk = c,
                Some(Err(e)) => return Err(std::io::Error::other(e.to_string())),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        let _ = self.chunk.split_to(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_upload_larger_than_the_writeback_step_lands_whole_and_only_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let t = Target::parse(dir.path().to_str().unwrap(), &S3Options::default()).unwrap();
        let data: Vec<u8> = (0..(WRITEBACK_EVERY as usize * 2 + 12_345))
            .map(|i| (i * 7 + i / 4096) as u8)
            .collect();
        let mut up = t.create("big").unwrap();
        // uneven writes, so write-back starts mid-call
        for part in data.chunks(1_000_003) {
            up.write_all(part).unwrap();
        }
        assert_eq!(
            t.list().unwrap(),
            vec!["big.partial".to_string()],
            "not visible before finish"
        );
        up.finish().unwrap();
        assert_eq!(t.list().unwrap(), vec!["big".to_string()]);
        let mut back = Vec::new();
        t.open_read("big", 0)
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == data, "the file differs from what was written");
    }
}
