//! The tables, created and upgraded by versioned migrations on first start.
//!
//! `statefile_schema` holds one row: the version of the tables. Opening the store runs,
//! in one transaction under an advisory lock (so servers starting together take turns),
//! every migration newer than that version; a database whose version is newer than
//! [`LATEST`] is refused, since this build cannot know what the newer tables mean.
//! Each migration also only creates what is missing, so a half-applied manual change
//! does not stop a start.

use tokio_postgres::GenericClient;

/// The schema version this build writes and understands.
pub const LATEST: i32 = 2;

/// Migration `i` brings the tables from version `i` to `i + 1`.
const MIGRATIONS: [&str; LATEST as usize] = [
    // 1: documents, their kept versions, and Idempotency-Key answers.
    r#"
    CREATE TABLE IF NOT EXISTS statefile_documents (
        name       text COLLATE "C" PRIMARY KEY,
        body       bytea NOT NULL,
        version    text NOT NULL,
        written_at timestamptz NOT NULL DEFAULT clock_timestamp()
    );
    CREATE TABLE IF NOT EXISTS statefile_backups (
        name       text COLLATE "C" NOT NULL,
        seq        bigint GENERATED ALWAYS AS IDENTITY,
        body       bytea NOT NULL,
        version    text NOT NULL,
        written_at timestamptz NOT NULL,
        PRIMARY KEY (name, seq)
    );
    CREATE TABLE IF NOT EXISTS statefile_idempotency (
        name       text COLLATE "C" NOT NULL,
        key        text NOT NULL,
        request    bytea NOT NULL,
        result     text NOT NULL,
        version    text NOT NULL,
        created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        PRIMARY KEY (name, key)
    );
    CREATE INDEX IF NOT EXISTS statefile_idempotency_created_at
        ON statefile_idempotency (created_at);
    "#,
    // 2: the names that have been directories (`d.json` once `d.json/x.json` was
    // created), which stay in the way of a document of that name as the directory does
    // on disk, whatever was deleted below it; filled from the names already stored.
    r#"
    CREATE TABLE IF NOT EXISTS statefile_directories (
        name text COLLATE "C" PRIMARY KEY
    );
    INSERT INTO statefile_directories (name)
    SELECT DISTINCT left(n.name, p.pos - 1)
    FROM (SELECT name FROM statefile_documents UNION SELECT name FROM statefile_backups) AS n,
         LATERAL unnest(array_positions(string_to_array(n.name, NULL), '/')) AS p(pos)
    ON CONFLICT (name) DO NOTHING;
    "#,
];

/// Why the tables could not be made ready.
#[derive(Debug)]
pub enum MigrateError {
    /// The database's tables are newer than this build.
    Newer(i32),
    /// The database refused or failed.
    Db(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for MigrateError {
    fn from(e: tokio_postgres::Error) -> Self {
        MigrateError::Db(e)
    }
}

/// Bring the tables to [`LATEST`]; returns the version found before.
pub async fn migrate(client: &mut deadpool_postgres::Object) -> Result<i32, MigrateError> {
    let tx = client.transaction().await?;
    // One migrator per schema at a time; the key names the schema.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('statefile:migrate:' || current_schema(), 0))",
        &[],
    )
    .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS statefile_schema (
             one     boolean PRIMARY KEY DEFAULT true CHECK (one),
             version integer NOT NULL
         )",
    )
    .await?;
    let found: i32 = tx
        .query_opt("SELECT version FROM statefile_schema", &[])
        .await?
        .map_or(0, |r| r.get(0));
    if found > LATEST {
        return Err(MigrateError::Newer(found));
    }
    for m in &MIGRATIONS[found.max(0) as usize..] {
        tx.batch_execute(m).await?;
    }
    if found < LATEST {
        tx.execute(
            "INSERT INTO statefile_schema (one, version) VALUES (true, $1)
             ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version",
            &[&LATEST],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(found)
}

/// The server's durability settings that matter: warnings for each one that is off.
pub async fn durability_warnings(
    client: &impl GenericClient,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT current_setting('fsync'), current_setting('synchronous_commit')",
            &[],
        )
        .await?;
    let fsync: String = row.get(0);
    let sync_commit: String = row.get(1);
    let mut out = Vec::new();
    if fsync != "on" {
        out.push(
            "the database runs with fsync off: a power loss or OS crash can lose or corrupt \
             acknowledged writes"
                .to_string(),
        );
    }
    if sync_commit == "off" {
        out.push(
            "the database runs with synchronous_commit off: a database crash can lose the \
             last acknowledged writes"
                .to_string(),
        );
    }
    Ok(out)
}
