//! S3 for the tests: an in-process S3 server (s3s-fs) that verifies SigV4, or, when
//! `TEST_S3_ENDPOINT` is set, an external S3-compatible server (CI runs SeaweedFS). Each test
//! gets a bucket of its own.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use s3s::{S3, S3Request, S3Response, S3Result, dto};
use tokio::net::TcpListener;
use tokio::sync::watch;

const IN_PROCESS_KEY: &str = "test-access-key";
const IN_PROCESS_SECRET: &str = "test-secret-key-0123456789";

pub struct TestS3 {
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    in_process: Option<InProcess>,
}

struct InProcess {
    root: tempfile::TempDir,
    stop: watch::Sender<bool>,
    writes: Writes,
}

/// What each object write asked for: (key, `x-amz-server-side-encryption`).
type Writes = Arc<Mutex<Vec<(String, Option<String>)>>>;

impl TestS3 {
    pub async fn start() -> TestS3 {
        TestS3::start_on(std::env::var("TEST_S3_ENDPOINT").ok()).await
    }

    /// The in-process server even when `TEST_S3_ENDPOINT` is set (to stop and restart it).
    pub async fn start_in_process() -> TestS3 {
        TestS3::start_on(None).await
    }

    async fn start_on(external: Option<String>) -> TestS3 {
        let bucket = format!("test-{}", uuid::Uuid::new_v4().simple());
        let s3 = match external {
            Some(endpoint) => TestS3 {
                endpoint,
                bucket,
                access_key: std::env::var("TEST_S3_ACCESS_KEY").expect("TEST_S3_ACCESS_KEY"),
                secret_key: std::env::var("TEST_S3_SECRET_KEY").expect("TEST_S3_SECRET_KEY"),
                in_process: None,
            },
            None => {
                let root = tempfile::tempdir().unwrap();
                let writes = Writes::default();
                let (endpoint, stop) = serve(root.path().to_path_buf(), None, writes.clone()).await;
                TestS3 {
                    endpoint,
                    bucket,
                    access_key: IN_PROCESS_KEY.into(),
                    secret_key: IN_PROCESS_SECRET.into(),
                    in_process: Some(InProcess { root, stop, writes }),
                }
            }
        };
        s3.client()
            .create_bucket()
            .bucket(&s3.bucket)
            .send()
            .await
            .expect("creating a test bucket");
        s3
    }

    /// The settings that point the server at this bucket.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_S3_BUCKET_NAME", self.bucket.clone()),
            ("AWS_S3_ENDPOINT", self.endpoint.clone()),
            ("AWS_S3_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
        ]
    }

    pub fn client(&self) -> Client {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                &self.access_key,
                &self.secret_key,
                None,
                None,
                "test",
            ))
            .build();
        Client::from_conf(config)
    }

    /// Multipart uploads started and neither completed nor aborted.
    pub async fn pending_multipart_uploads(&self) -> usize {
        match &self.in_process {
            // s3s-fs keeps an upload as `.upload-{id}.json` (and its parts as
            // `.upload_id-{id}-*`) in its root until it ends.
            Some(p) => std::fs::read_dir(p.root.path())
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with(".upload-")
                })
                .count(),
            None => {
                let listed = self
                    .client()
                    .list_multipart_uploads()
                    .bucket(&self.bucket)
                    .send()
                    .await
                    .unwrap();
                listed.uploads().len()
            }
        }
    }

    /// The server-side encryption of every object written so far, by key: as the in-process
    /// server saw it asked for, or as an external server reports it (HEAD).
    pub async fn encryption_of_writes(&self) -> Vec<(String, Option<String>)> {
        if let Some(p) = &self.in_process {
            return p.writes.lock().unwrap().clone();
        }
        let client = self.client();
        let listed = client
            .list_objects_v2()
            .bucket(&self.bucket)
            .send()
            .await
            .unwrap();
        let mut found = Vec::new();
        for object in listed.contents() {
            let key = object.key().unwrap().to_owned();
            let head = client
                .head_object()
                .bucket(&self.bucket)
                .key(&key)
                .send()
                .await
                .unwrap();
            let encryption = head.server_side_encryption().map(|e| e.as_str().to_owned());
            found.push((key, encryption));
        }
        found
    }

    /// Stops the in-process server: the listener closes and open connections drop.
    pub fn stop(&self) {
        let p = self
            .in_process
            .as_ref()
            .expect("only the in-process server can be stopped");
        let _ = p.stop.send(true);
    }

    /// Starts the in-process server again on the same port and data.
    pub async fn restart(&mut self) {
        let port: u16 = self.endpoint.rsplit(':').next().unwrap().parse().unwrap();
        let p = self.in_process.as_mut().expect("in-process only");
        let (_, stop) = serve(p.root.path().to_path_buf(), Some(port), p.writes.clone()).await;
        p.stop = stop;
    }
}

/// s3s-fs plus the one call it lacks that the server uses: `ListMultipartUploads`,
/// answered from the uploads this wrapper saw started and not yet completed or aborted.
/// Everything else goes to s3s-fs unchanged. (CI runs the same tests on SeaweedFS, which
/// implements the call itself.)
struct WithUploadListing {
    fs: s3s_fs::FileSystem,
    /// (bucket, key, upload id) -> started.
    uploads: Mutex<BTreeMap<(String, String, String), SystemTime>>,
    writes: Writes,
}

impl WithUploadListing {
    fn saw_write(&self, key: &str, encryption: Option<&dto::ServerSideEncryption>) {
        let encryption = encryption.map(|e| e.as_str().to_owned());
        self.writes
            .lock()
            .unwrap()
            .push((key.to_owned(), encryption));
    }
}

/// The `S3` impl: the listed calls go to s3s-fs, then the items written out. (One macro
/// for the whole impl, since `async_trait` must see the methods it rewrites.)
macro_rules! s3_delegating_to_fs {
    ($($call:ident: $input:ident -> $output:ident),* $(,)?; $($item:item)*) => {
        #[async_trait::async_trait]
        impl S3 for WithUploadListing {
            $(async fn $call(&self, req: S3Request<dto::$input>) -> S3Result<S3Response<dto::$output>> {
                self.fs.$call(req).await
            })*
            $($item)*
        }
    };
}

s3_delegating_to_fs!(
        create_bucket: CreateBucketInput -> CreateBucketOutput,
        copy_object: CopyObjectInput -> CopyObjectOutput,
        delete_bucket: DeleteBucketInput -> DeleteBucketOutput,
        delete_object: DeleteObjectInput -> DeleteObjectOutput,
        delete_objects: DeleteObjectsInput -> DeleteObjectsOutput,
        get_bucket_location: GetBucketLocationInput -> GetBucketLocationOutput,
        get_object: GetObjectInput -> GetObjectOutput,
        head_bucket: HeadBucketInput -> HeadBucketOutput,
        head_object: HeadObjectInput -> HeadObjectOutput,
        list_buckets: ListBucketsInput -> ListBucketsOutput,
        list_objects: ListObjectsInput -> ListObjectsOutput,
        list_objects_v2: ListObjectsV2Input -> ListObjectsV2Output,
        upload_part: UploadPartInput -> UploadPartOutput,
        upload_part_copy: UploadPartCopyInput -> UploadPartCopyOutput,
        list_parts: ListPartsInput -> ListPartsOutput;

    async fn put_object(
        &self,
        req: S3Request<dto::PutObjectInput>,
    ) -> S3Result<S3Response<dto::PutObjectOutput>> {
        self.saw_write(&req.input.key, req.input.server_side_encryption.as_ref());
        self.fs.put_object(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<dto::CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CreateMultipartUploadOutput>> {
        self.saw_write(&req.input.key, req.input.server_side_encryption.as_ref());
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let created = self.fs.create_multipart_upload(req).await?;
        if let Some(id) = &created.output.upload_id {
            let mut uploads = self.uploads.lock().unwrap();
            uploads.insert((bucket, key, id.clone()), SystemTime::now());
        }
        Ok(created)
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<dto::CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::CompleteMultipartUploadOutput>> {
        let i = &req.input;
        let id = (i.bucket.clone(), i.key.clone(), i.upload_id.clone());
        let completed = self.fs.complete_multipart_upload(req).await?;
        self.uploads.lock().unwrap().remove(&id);
        Ok(completed)
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<dto::AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<dto::AbortMultipartUploadOutput>> {
        let i = &req.input;
        let id = (i.bucket.clone(), i.key.clone(), i.upload_id.clone());
        let aborted = self.fs.abort_multipart_upload(req).await?;
        self.uploads.lock().unwrap().remove(&id);
        Ok(aborted)
    }

    /// One page, as a small bucket needs: every upload under the prefix.
    async fn list_multipart_uploads(
        &self,
        req: S3Request<dto::ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<dto::ListMultipartUploadsOutput>> {
        let prefix = req.input.prefix.clone().unwrap_or_default();
        let uploads = self.uploads.lock().unwrap();
        let listed = uploads
            .iter()
            .filter(|((bucket, key, _), _)| *bucket == req.input.bucket && key.starts_with(&prefix))
            .map(|((_, key, id), started)| dto::MultipartUpload {
                key: Some(key.clone()),
                upload_id: Some(id.clone()),
                initiated: Some((*started).into()),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(dto::ListMultipartUploadsOutput {
            bucket: Some(req.input.bucket.clone()),
            prefix: Some(prefix),
            is_truncated: Some(false),
            uploads: Some(listed),
            ..Default::default()
        }))
    }
);

async fn serve(root: PathBuf, port: Option<u16>, writes: Writes) -> (String, watch::Sender<bool>) {
    let fs = WithUploadListing {
        fs: s3s_fs::FileSystem::new(&root).unwrap(),
        uploads: Default::default(),
        writes,
    };
    let mut builder = S3ServiceBuilder::new(fs);
    builder.set_auth(SimpleAuth::from_single(IN_PROCESS_KEY, IN_PROCESS_SECRET));
    let service = builder.build();
    let listener = TcpListener::bind(("127.0.0.1", port.unwrap_or(0)))
        .await
        .unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        let mut stopped_accepting = stopped.clone();
        loop {
            let socket = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((socket, _)) => socket,
                    Err(_) => continue,
                },
                _ = stopped_accepting.changed() => return,
            };
            let service = service.clone();
            let mut stopped_serving = stopped.clone();
            tokio::spawn(async move {
                let connection = ConnBuilder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(socket), service)
                    .into_owned();
                tokio::select! {
                    _ = connection => {}
                    _ = stopped_serving.changed() => {}
                }
            });
        }
    });
    (endpoint, stop)
}
