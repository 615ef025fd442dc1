//! Where a backup lives: a folder (Edge's `--backup-folder`) or an S3 bucket (Edge's
//! `--s3-bucket-name`), as named objects that are read whole and replaced whole. Every read is
//! bounded by size; every bucket call by the request timeout and a short retry budget.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;

use crate::config::Bucket;

#[derive(Clone)]
pub(super) enum Place {
    Folder(PathBuf),
    Bucket {
        name: String,
        store: Arc<dyn ObjectStore>,
    },
}

impl std::fmt::Debug for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Place {
    pub fn folder(dir: &Path) -> Place {
        Place::Folder(dir.to_path_buf())
    }

    /// The bucket, with credentials, region and endpoint from the standard AWS environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
    /// `AWS_ENDPOINT_URL`, web identity, the container and instance credential endpoints).
    pub fn bucket(bucket: &Bucket, timeout: Duration) -> Result<Place, String> {
        use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
        use object_store::ClientConfigKey;
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&bucket.name)
            .with_virtual_hosted_style_request(!bucket.force_path_style)
            .with_retry(object_store::RetryConfig {
                max_retries: 2,
                retry_timeout: timeout * 2,
                ..Default::default()
            });
        // A plain-HTTP endpoint (MinIO or a test server) is meant as given.
        if builder
            .get_config_value(&AmazonS3ConfigKey::Endpoint)
            .is_some_and(|e| e.starts_with("http://"))
        {
            builder = builder.with_allow_http(true);
        }
        let secs = format!("{}ms", timeout.as_millis());
        builder = builder
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), &secs)
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                &secs,
            );
        let store = builder.build().map_err(|e| e.to_string())?;
        Ok(Place::Bucket {
            name: bucket.name.clone(),
            store: Arc::new(store),
        })
    }

    /// For messages: the folder or `s3://bucket`.
    pub fn describe(&self) -> String {
        match self {
            Place::Folder(dir) => format!("backup folder {}", dir.display()),
            Place::Bucket { name, .. } => format!("backup bucket s3://{name}"),
        }
    }

    /// The object `name`, `None` when there is none; larger than `max` is an error.
    pub async fn read(&self, name: &str, max: u64) -> Result<Option<Vec<u8>>, String> {
        match self {
            Place::Folder(dir) => {
                let path = dir.join(name);
                let read = tokio::task::spawn_blocking(move || read_file(&path, max));
                read.await.map_err(|e| e.to_string())?
            }
            Place::Bucket { store, .. } => {
                let got = match store.get(&object_store::path::Path::from(name)).await {
                    Ok(got) => got,
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(format!("cannot read {name}: {e}")),
                };
                if got.meta.size > max {
                    return Err(format!("{name} is larger than {max} bytes"));
                }
                let bytes = got
                    .bytes()
                    .await
                    .map_err(|e| format!("cannot read {name}: {e}"))?;
                if bytes.len() as u64 > max {
                    return Err(format!("{name} is larger than {max} bytes"));
                }
                Ok(Some(bytes.to_vec()))
            }
        }
    }

    /// Replaces the object `name` whole: a reader sees the old bytes or the new, never a part.
    pub async fn write(&self, name: &str, bytes: Vec<u8>) -> Result<(), String> {
        match self {
            Place::Folder(dir) => {
                let (dir, name) = (dir.clone(), name.to_string());
                let write = tokio::task::spawn_blocking(move || write_atomic(&dir, &name, &bytes));
                write.await.map_err(|e| e.to_string())?
            }
            Place::Bucket { store, .. } => store
                .put(&object_store::path::Path::from(name), bytes.into())
                .await
                .map(|_| ())
                .map_err(|e| format!("cannot write {name}: {e}")),
        }
    }
}

fn read_file(path: &Path, max: u64) -> Result<Option<Vec<u8>>, String> {
    use std::io::Read as _;
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.len() as u64 > max {
        return Err(format!("{} is larger than {max} bytes", path.display()));
    }
    Ok(Some(bytes))
}

/// Writes `bytes` to `dir/name` atomically: a temporary file, synced, then renamed over it.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create it: {e}"))?;
    let path = dir.join(name);
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("cannot write {}: {e}", path.display()));
    }
    Ok(())
}
