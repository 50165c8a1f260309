//! Crash consistency of flushes and compactions at the file-system level.
//!
//! The cold tier's file calls go through a recorder that keeps a model of what a disk
//! holds after a power loss: a file's data as of its last fsync (nothing if it was
//! never synced), a directory's entries as of its last fsync. After every call it
//! builds that disk image, with a checkpoint of RocksDB as it stands then (writes are
//! synced, so RocksDB holds what it acknowledged). Every image must open to exactly
//! the rows acknowledged before the job began: a flush that deleted its hot rows
//! before the segment and the manifest were durable, or renamed a manifest into place
//! before its data was, leaves an image without them.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use kalamdb_auth::identity::{Role, UserId};
use kalamdb_storage::cold::files::{FileOps, SystemFiles};
use kalamdb_storage::hot_store::HotStore;
use parking_lot::Mutex;

use crate::context::ExecContext;
use crate::engine::{Engine, EngineConfig};
use crate::testing::sql_rows;

#[derive(Clone)]
enum Entry {
    File(usize),
    Dir(PathBuf),
}

#[derive(Default)]
struct DirState {
    live: BTreeMap<OsString, Entry>,
    durable: BTreeMap<OsString, Entry>,
}

struct Inode {
    data: Vec<u8>,
    synced: Option<Vec<u8>>,
}

/// What the disk holds now, and what it would hold after a power loss.
#[derive(Default)]
struct Model {
    inodes: Vec<Inode>,
    dirs: HashMap<PathBuf, DirState>,
}

fn split(path: &Path) -> (PathBuf, OsString) {
    (
        path.parent().expect("a parent").to_path_buf(),
        path.file_name().expect("a name").to_os_string(),
    )
}

impl Model {
    fn dir(&mut self, path: &Path) -> &mut DirState {
        self.dirs
            .get_mut(path)
            .unwrap_or_else(|| panic!("{} is not a directory the model knows", path.display()))
    }

    fn file(&mut self, path: &Path) -> usize {
        let (dir, name) = split(path);
        match self.dir(&dir).live.get(&name) {
            Some(Entry::File(i)) => *i,
            _ => panic!("{} is not a file", path.display()),
        }
    }

    /// Writes what survives a power loss of the directory `dir` into `out`.
    fn materialize(&self, dir: &Path, out: &Path) {
        std::fs::create_dir_all(out).unwrap();
        for (name, entry) in &self.dirs[dir].durable {
            match entry {
                Entry::Dir(sub) => self.materialize(sub, &out.join(name)),
                Entry::File(i) => {
                    let data = self.inodes[*i].synced.clone().unwrap_or_default();
                    std::fs::write(out.join(name), data).unwrap();
                }
            }
        }
    }
}

/// One disk image: the cold directory after a power loss, RocksDB as it stood then.
struct Image {
    dir: PathBuf,
    label: String,
    /// Which of the test's expected states it must show.
    phase: usize,
}

/// The file calls of a cold tier, done for real and mirrored in the model, with an
/// image taken after each one.
struct Recorder {
    real: SystemFiles,
    root: PathBuf,
    out: PathBuf,
    model: Mutex<Model>,
    store: OnceLock<Arc<HotStore>>,
    images: Mutex<Vec<Image>>,
    phase: Mutex<usize>,
}

impl Recorder {
    fn new(root: PathBuf, out: PathBuf) -> Self {
        let mut model = Model::default();
        model.dirs.insert(root.clone(), DirState::default());
        Self {
            real: SystemFiles,
            root,
            out,
            model: Mutex::new(model),
            store: OnceLock::new(),
            images: Mutex::new(vec![]),
            phase: Mutex::new(0),
        }
    }

    /// Records an image of the disk as a power loss now would leave it.
    fn capture(&self, model: &Model, label: String) {
        let Some(store) = self.store.get() else { return };
        let mut images = self.images.lock();
        let dir = self.out.join(images.len().to_string());
        std::fs::create_dir_all(&dir).unwrap();
        store.checkpoint(&dir.join("hot")).unwrap();
        model.materialize(&self.root, &dir.join("cold"));
        images.push(Image {
            dir,
            label,
            phase: *self.phase.lock(),
        });
    }

    fn after(&self, what: &str, path: &Path, change: impl FnOnce(&mut Model)) {
        let mut model = self.model.lock();
        change(&mut model);
        let rel = path.strip_prefix(&self.root).unwrap_or(path).display();
        self.capture(&model, format!("after {what} {rel}"));
    }
}

impl FileOps for Recorder {
    fn create_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.real.create_dir(dir)?;
        self.after("create_dir", dir, |m| {
            let (parent, name) = split(dir);
            m.dir(&parent).live.insert(name, Entry::Dir(dir.to_path_buf()));
            m.dirs.insert(dir.to_path_buf(), DirState::default());
        });
        Ok(())
    }

    fn write(&self, file: &Path, bytes: &[u8]) -> std::io::Result<()> {
        self.real.write(file, bytes)?;
        self.after("write", file, |m| {
            let (parent, name) = split(file);
            match m.dir(&parent).live.get(&name).cloned() {
                Some(Entry::File(i)) => m.inodes[i].data = bytes.to_vec(),
                _ => {
                    m.inodes.push(Inode {
                        data: bytes.to_vec(),
                        synced: None,
                    });
                    let i = m.inodes.len() - 1;
                    m.dir(&parent).live.insert(name, Entry::File(i));
                }
            }
        });
        Ok(())
    }

    fn sync_file(&self, file: &Path) -> std::io::Result<()> {
        self.real.sync_file(file)?;
        self.after("sync_file", file, |m| {
            let i = m.file(file);
            m.inodes[i].synced = Some(m.inodes[i].data.clone());
        });
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.real.rename(from, to)?;
        self.after("rename to", to, |m| {
            let (from_dir, from_name) = split(from);
            let (to_dir, to_name) = split(to);
            let entry = m.dir(&from_dir).live.remove(&from_name).expect("renamed entry");
            m.dir(&to_dir).live.insert(to_name, entry);
        });
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.real.sync_dir(dir)?;
        self.after("sync_dir", dir, |m| {
            let d = m.dir(dir);
            d.durable = d.live.clone();
        });
        Ok(())
    }

    fn remove(&self, file: &Path) -> std::io::Result<()> {
        self.real.remove(file)?;
        self.after("remove", file, |m| {
            let (parent, name) = split(file);
            m.dir(&parent).live.remove(&name);
        });
        Ok(())
    }
}

fn config(dir: &Path) -> EngineConfig {
    let mut cfg = EngineConfig::new(dir);
    cfg.bcrypt_cost = 4;
    cfg.default_flush_policy = None;
    cfg.segment_delete_grace_ms = 0;
    cfg
}

/// The rows every reader sees: the SHARED table's, and each user's of the USER table.
async fn contents(engine: &Engine) -> Vec<Vec<Vec<serde_json::Value>>> {
    let mut all = vec![sql_rows(engine, "SELECT id, v FROM app.s ORDER BY id").await];
    for user in ["ann", "bob"] {
        let ctx = ExecContext::new(UserId::parse(user).unwrap(), Role::User);
        let rows = engine
            .execute_sql(&ctx, "SELECT id, v FROM app.u ORDER BY id", &[])
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"))
            .rows;
        all.push(rows);
    }
    all
}

/// Runs `sql` as root, waits for the job it queued, and records the image of the
/// moment after it (the hot rows deleted, the manifest durable or not).
async fn run_job(engine: &Engine, rec: &Recorder, sql: &str) {
    let id = sql_rows(engine, sql).await[0][0]
        .as_str()
        .expect("a job id")
        .to_string();
    for _ in 0..2000 {
        let r = sql_rows(engine, &format!("SELECT status FROM system.jobs WHERE job_id = '{id}'")).await;
        match r[0][0].as_str() {
            Some("completed") => {
                rec.capture(&rec.model.lock(), format!("after {sql} completed"));
                return;
            }
            Some("failed" | "cancelled") => panic!("{sql}: {r:?}"),
            _ => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
        }
    }
    panic!("{sql} did not finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_loss_at_any_point_of_a_flush_or_compaction_keeps_every_row() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("cold")).unwrap();
    let cold_root = data.join("cold").canonicalize().unwrap();
    let rec = Arc::new(Recorder::new(cold_root, tmp.path().join("images")));
    let engine = Engine::open_with(config(&data), Some(rec.clone())).await.unwrap();
    rec.store.set(engine.store.clone()).ok().unwrap();
    for sql in [
        "CREATE NAMESPACE app",
        "CREATE TABLE app.s (id BIGINT PRIMARY KEY, v TEXT) WITH (TYPE = 'SHARED')",
        "CREATE TABLE app.u (id BIGINT PRIMARY KEY, v TEXT) WITH (TYPE = 'USER')",
        "CREATE USER ann WITH PASSWORD 'ann-password' ROLE user",
        "CREATE USER bob WITH PASSWORD 'bob-password' ROLE user",
    ] {
        sql_rows(&engine, sql).await;
    }
    let values = |from: i64, to: i64, tag: &str| {
        (from..to)
            .map(|i| format!("({i}, '{tag}{i}')"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    sql_rows(&engine, &format!("INSERT INTO app.s VALUES {}", values(0, 300, "a"))).await;
    for (user, n) in [("ann", 40), ("bob", 25)] {
        let ctx = ExecContext::new(UserId::parse(user).unwrap(), Role::User);
        let sql = format!("INSERT INTO app.u VALUES {}", values(0, n, user));
        engine.execute_sql(&ctx, &sql, &[]).await.unwrap();
    }
    let mut expected = vec![contents(&engine).await];
    rec.capture(&rec.model.lock(), "before any job".into());
    run_job(&engine, &rec, "FLUSH TABLE app.s").await;
    run_job(&engine, &rec, "FLUSH TABLE app.u").await;

    // a second segment for each partition, with updates and deletes of flushed rows
    for sql in [
        format!("INSERT INTO app.s VALUES {}", values(300, 450, "b")),
        "UPDATE app.s SET v = 'changed' WHERE id < 40".into(),
        "DELETE FROM app.s WHERE id >= 100 AND id < 120".into(),
    ] {
        sql_rows(&engine, &sql).await;
    }
    let ann = ExecContext::new(UserId::parse("ann").unwrap(), Role::User);
    for sql in [
        format!("INSERT INTO app.u VALUES {}", values(40, 60, "ann")),
        "DELETE FROM app.u WHERE id < 10".into(),
    ] {
        engine.execute_sql(&ann, &sql, &[]).await.unwrap();
    }
    expected.push(contents(&engine).await);
    *rec.phase.lock() = 1;
    rec.capture(&rec.model.lock(), "before the second flushes".into());
    run_job(&engine, &rec, "FLUSH TABLE app.s").await;
    run_job(&engine, &rec, "FLUSH TABLE app.u").await;
    run_job(&engine, &rec, "COMPACT TABLE app.s").await;
    run_job(&engine, &rec, "COMPACT TABLE app.u").await;
    // the replaced segments go after the grace period (0 here)
    let before = rec.images.lock().len();
    for _ in 0..500 {
        if rec.images.lock().len() >= before + 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(contents(&engine).await, expected[1]);

    let images = std::mem::take(&mut *rec.images.lock());
    let labels: Vec<&str> = images.iter().map(|i| i.label.as_str()).collect();
    for needed in [
        "sync_file",
        "sync_dir",
        "rename to",
        "create_dir",
        "remove",
        "COMPACT TABLE app.u",
    ] {
        assert!(
            labels.iter().any(|l| l.contains(needed)),
            "no image {needed}: {labels:?}"
        );
    }
    for image in &images {
        let reopened = Engine::open(config(&image.dir))
            .await
            .unwrap_or_else(|e| panic!("image {} ({}): {e}", image.dir.display(), image.label));
        assert_eq!(
            contents(&reopened).await,
            expected[image.phase],
            "a power loss {} lost or changed rows (image {})",
            image.label,
            image.dir.display()
        );
    }
}
