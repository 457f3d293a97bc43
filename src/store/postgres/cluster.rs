//! The cluster's SQL (issue 9): nodes, heartbeats, claims, the settling of dead nodes' actions,
//! and cancels across nodes. One function per [`Cluster`](crate::store::Cluster) method, run
//! inside the transaction `PgStore` opened; every time is the database's (`now()`).
//!
//! A node is one incarnation of a daemon (`nodes.id`); `actions.node` says which node holds an
//! action (claimed, then running). A survivor declares a silent node dead with one `UPDATE`
//! (its row lock makes exactly one survivor do it), and settles dead nodes' actions under
//! `FOR UPDATE SKIP LOCKED`, so two survivors never settle one action twice, and a survivor that
//! dies half-way leaves the rest to the next.

use serde_json::Value;

use super::journal::{fence_node, result_event};
use super::pool::Conn;
use crate::store::types::result_value;
use crate::store::{
    ClusterCancel, ClusterStatus, Millis, NodeId, Reaped, Result, StoreError, UnclaimedFn, Verdict, VerdictFn,
};

/// Registers a new incarnation of `name`; the caller holds `name`'s lock, so incarnations of it
/// still marked alive are gone: they are declared dead here (their actions are settled by the
/// next [`reap`]).
pub async fn join(c: &Conn, name: &str) -> Result<(NodeId, Vec<NodeId>)> {
    let bury = c
        .prepare("UPDATE nodes SET state = 'dead', ended_at = now() WHERE name = $1 AND state = 'alive' RETURNING id")
        .await?;
    let buried = c.client.query(&bury, &[&name]).await?;
    let buried =
        buried.iter().map(|r| Ok(NodeId { id: r.try_get(0)?, name: name.to_owned() })).collect::<Result<Vec<_>>>()?;
    let insert = c.prepare("INSERT INTO nodes (name, state) VALUES ($1, 'alive') RETURNING id").await?;
    let id: i64 = c.client.query_one(&insert, &[&name]).await?.try_get(0)?;
    Ok((NodeId { id, name: name.to_owned() }, buried))
}

pub async fn heartbeat(c: &Conn, node: i64) -> Result<()> {
    let update = c.prepare("UPDATE nodes SET heartbeat_at = now() WHERE id = $1 AND state = 'alive'").await?;
    if c.client.execute(&update, &[&node]).await? == 0 {
        return Err(StoreError::Fenced(
            "this daemon was declared dead by another (silent past the node timeout)".into(),
        ));
    }
    Ok(())
}

/// Declares the silent nodes dead, then settles what dead and departed nodes held (and what a
/// daemon of the single-node era left running: `node` NULL).
pub async fn reap(c: &Conn, me: Option<i64>, timeout_ms: i64, now: Millis, verdict: &VerdictFn) -> Result<Reaped> {
    let declare = c
        .prepare(
            "UPDATE nodes SET state = 'dead', ended_at = now()
             WHERE state = 'alive' AND heartbeat_at < now() - $1::INT8 * interval '1 millisecond'
               AND id IS DISTINCT FROM $2
             RETURNING id, name",
        )
        .await?;
    let mut reaped = Reaped::default();
    for row in c.client.query(&declare, &[&timeout_ms, &me]).await? {
        reaped.declared.push(NodeId { id: row.try_get(0)?, name: row.try_get(1)? });
    }
    let orphans = c
        .prepare(
            "SELECT a.task_id, a.state, a.action, coalesce(n.name, '') FROM actions a LEFT JOIN nodes n ON n.id = a.node
             WHERE a.state <> 'done'
               AND ((a.node IS NOT NULL AND n.state IS DISTINCT FROM 'alive') OR (a.node IS NULL AND a.state = 'running'))
             ORDER BY a.seq FOR UPDATE OF a SKIP LOCKED",
        )
        .await?;
    let release = c.prepare("UPDATE actions SET node = NULL, cancel_requested = FALSE WHERE task_id = $1").await?;
    let rerun = c
        .prepare(
            "UPDATE actions SET state = 'accepted', node = NULL, cancel_requested = FALSE, action = $2, started_ms = NULL
             WHERE task_id = $1",
        )
        .await?;
    let answer =
        c.prepare("UPDATE actions SET state = 'done', result = $2, finished_ms = $3 WHERE task_id = $1").await?;
    for row in c.client.query(&orphans, &[]).await? {
        let (task_id, state, action, name): (String, String, String, String) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
        if state == "accepted" {
            c.client.execute(&release, &[&task_id]).await?;
            reaped.released += 1;
            continue;
        }
        let stored: Value = serde_json::from_str(&action).unwrap_or(Value::Null);
        match verdict(&task_id, &stored) {
            Verdict::Answer(result) => {
                let data = result_value(&result)?;
                c.client.execute(&answer, &[&task_id, &data.to_string(), &now]).await?;
                reaped.events.push(result_event(c, &task_id, data, now).await?);
                reaped.answered.push((task_id, name));
            }
            Verdict::Rerun(stored) => {
                c.client.execute(&rerun, &[&task_id, &stored.to_string()]).await?;
                reaped.released += 1;
                reaped.rerun.push((task_id, name));
            }
        }
    }
    // Nodes long gone and holding nothing are forgotten.
    let forget = c
        .prepare(
            "DELETE FROM nodes WHERE state <> 'alive' AND ended_at < now() - interval '1 day'
             AND NOT EXISTS (SELECT 1 FROM actions WHERE actions.node = nodes.id AND actions.state <> 'done')",
        )
        .await?;
    c.client.execute(&forget, &[]).await?;
    Ok(reaped)
}

/// Claims up to `n` unheld accepted actions for `node`, oldest first.
pub async fn claim(c: &Conn, node: i64, n: usize) -> Result<Vec<(String, Value)>> {
    fence_node(c, Some(node)).await?;
    let claim = c
        .prepare(
            "UPDATE actions SET node = $1 WHERE seq IN (
                 SELECT seq FROM actions WHERE state = 'accepted' AND node IS NULL
                 ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED)
             RETURNING seq, task_id, action",
        )
        .await?;
    let limit = i64::try_from(n).unwrap_or(i64::MAX);
    let mut rows = c
        .client
        .query(&claim, &[&node, &limit])
        .await?
        .iter()
        .map(|r| Ok((r.try_get::<_, i64>(0)?, r.try_get::<_, String>(1)?, r.try_get::<_, String>(2)?)))
        .collect::<Result<Vec<_>>>()?;
    rows.sort_by_key(|(seq, _, _)| *seq);
    Ok(rows.into_iter().map(|(_, id, action)| (id, serde_json::from_str(&action).unwrap_or(Value::Null))).collect())
}

pub async fn hand_back(c: &Conn, node: i64) -> Result<u64> {
    let release = c
        .prepare("UPDATE actions SET node = NULL, cancel_requested = FALSE WHERE node = $1 AND state = 'accepted'")
        .await?;
    Ok(c.client.execute(&release, &[&node]).await?)
}

pub async fn leave(c: &Conn, node: i64) -> Result<()> {
    let update =
        c.prepare("UPDATE nodes SET state = 'left', ended_at = now() WHERE id = $1 AND state = 'alive'").await?;
    c.client.execute(&update, &[&node]).await?;
    Ok(())
}

pub async fn cancel(c: &Conn, task_id: &str, unclaimed: &UnclaimedFn, now: Millis) -> Result<ClusterCancel> {
    let select = c
        .prepare(
            "SELECT state, node IS NULL, coalesce((SELECT name FROM nodes WHERE nodes.id = actions.node), ''), action
             FROM actions WHERE task_id = $1 FOR UPDATE",
        )
        .await?;
    let Some(row) = c.client.query_opt(&select, &[&task_id]).await? else { return Ok(ClusterCancel::Unknown) };
    let (state, unheld, name): (String, bool, String) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    if state == "done" {
        return Ok(ClusterCancel::Finished);
    }
    if state == "accepted" && unheld {
        let stored: Value = serde_json::from_str(&row.try_get::<_, String>(3)?).unwrap_or(Value::Null);
        let data = result_value(&unclaimed(&stored))?;
        let answer =
            c.prepare("UPDATE actions SET state = 'done', result = $2, finished_ms = $3 WHERE task_id = $1").await?;
        c.client.execute(&answer, &[&task_id, &data.to_string(), &now]).await?;
        return Ok(ClusterCancel::Answered(Some(result_event(c, task_id, data, now).await?)));
    }
    let ask = c.prepare("UPDATE actions SET cancel_requested = TRUE WHERE task_id = $1").await?;
    c.client.execute(&ask, &[&task_id]).await?;
    Ok(ClusterCancel::Asked(name))
}

pub async fn cancels(c: &Conn, node: i64) -> Result<Vec<String>> {
    let take = c
        .prepare(
            "UPDATE actions SET cancel_requested = FALSE
             WHERE node = $1 AND cancel_requested AND state <> 'done' RETURNING task_id",
        )
        .await?;
    c.client.query(&take, &[&node]).await?.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

pub async fn last_event_id(c: &Conn) -> Result<i64> {
    let select = c.prepare("SELECT last FROM event_counter").await?;
    Ok(c.client.query_one(&select, &[]).await?.try_get(0)?)
}

pub async fn status(c: &Conn) -> Result<ClusterStatus> {
    let select = c
        .prepare(
            "SELECT (SELECT count(*) FROM nodes WHERE state = 'alive'),
                    count(*) FILTER (WHERE state = 'accepted' AND node IS NULL),
                    count(*) FILTER (WHERE state = 'accepted' AND node IS NOT NULL),
                    count(*) FILTER (WHERE state = 'running')
             FROM actions WHERE state <> 'done'",
        )
        .await?;
    let row = c.client.query_one(&select, &[]).await?;
    let count = |i: usize| -> Result<u64> { Ok(row.try_get::<_, i64>(i)?.max(0).unsigned_abs()) };
    Ok(ClusterStatus { nodes_alive: count(0)?, unclaimed: count(1)?, claimed: count(2)?, running: count(3)? })
}
