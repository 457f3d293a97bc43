//! `mcp-workers enqueue` and `mcp-workers tasks`: getting work into the queue and results out.
//! They open the store (`--store`, default the data directory's) directly; a server polling the
//! same store sees new tasks within milliseconds (the store's change subscription wakes its
//! waiting polls).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::args::GlobalArgs;
use crate::store::{QueueStore, Task, TaskState};

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// Prompts to queue, one task each.
    pub prompts: Vec<String>,
    /// Read tasks from a JSONL file (`-`: stdin): per line `{"prompt": "..."}` or a JSON string.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Print the ids as one JSON array instead of one per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TasksArgs {
    #[command(subcommand)]
    pub command: Option<TasksCommand>,
    /// Only dead letters (tasks given up after too many attempts), with the reason.
    #[arg(long)]
    pub dead: bool,
    /// Only tasks in this state: queued, leased, done, dead.
    #[arg(long, value_parser = parse_state, conflicts_with = "dead")]
    pub state: Option<TaskState>,
    /// At most this many tasks, oldest first.
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
    /// One JSON array of task objects.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// One task with its response.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// The kept stream-json transcript of a worker (`run` or `serve`), secrets scrubbed.
    Transcript { id: String },
}

fn parse_state(s: &str) -> Result<TaskState, String> {
    TaskState::parse(s).ok_or_else(|| format!("`{s}` is not a state (queued, leased, done, dead)"))
}

async fn open(global: &GlobalArgs) -> anyhow::Result<std::sync::Arc<dyn QueueStore>> {
    Ok(super::open_store(&super::store_location(global)?).await?.queue)
}

/// Prompts of a JSONL source: `{"prompt": "..."}` or `"..."` per line; blank lines skipped.
pub fn read_jsonl(reader: impl BufRead, name: &str) -> anyhow::Result<Vec<String>> {
    let mut prompts = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {name}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("{name}:{}: not JSON", n + 1))?;
        let prompt = match &value {
            serde_json::Value::String(s) => s.as_str(),
            serde_json::Value::Object(o) => match o.get("prompt") {
                Some(serde_json::Value::String(s)) => s.as_str(),
                _ => bail!("{name}:{}: expected a string field \"prompt\"", n + 1),
            },
            _ => bail!("{name}:{}: expected {{\"prompt\": \"...\"}} or a JSON string", n + 1),
        };
        if prompt.trim().is_empty() {
            bail!("{name}:{}: the prompt is empty", n + 1);
        }
        prompts.push(prompt.to_owned());
    }
    Ok(prompts)
}

fn read_file(path: &Path) -> anyhow::Result<Vec<String>> {
    if path == Path::new("-") {
        return read_jsonl(std::io::stdin().lock(), "stdin");
    }
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    read_jsonl(std::io::BufReader::new(file), &path.display().to_string())
}

pub async fn enqueue(global: &GlobalArgs, args: EnqueueArgs) -> anyhow::Result<ExitCode> {
    let mut prompts = args.prompts;
    if prompts.iter().any(|p| p.trim().is_empty()) {
        bail!("a prompt is empty");
    }
    if let Some(path) = &args.file {
        prompts.extend(read_file(path)?);
    }
    if prompts.is_empty() {
        bail!("nothing to enqueue: give prompts as arguments or --file tasks.jsonl");
    }
    let ids = open(global).await?.enqueue(&prompts).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&ids)?)?;
    } else {
        for id in &ids {
            writeln!(out, "{id}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn print_task(out: &mut impl Write, t: &Task) -> std::io::Result<()> {
    writeln!(out, "id:       {}", t.id)?;
    writeln!(out, "state:    {}", t.state.as_str())?;
    writeln!(out, "attempts: {}", t.attempts)?;
    if let Some(owner) = &t.owner {
        writeln!(out, "worker:   {owner}")?;
    }
    if let Some(reason) = &t.dead_reason {
        writeln!(out, "dead:     {reason}")?;
    }
    writeln!(out, "prompt:\n{}", t.prompt)?;
    if let Some(response) = &t.response {
        writeln!(out, "response:\n{response}")?;
    }
    Ok(())
}

pub async fn tasks(global: &GlobalArgs, args: TasksArgs) -> anyhow::Result<ExitCode> {
    if let Some(TasksCommand::Transcript { id }) = &args.command {
        let path = crate::worker::transcript::transcript_path(&global.data_dir(), id);
        let Some(text) = path.and_then(|path| std::fs::read(path).ok()) else {
            eprintln!("mcp-workers: no transcript kept for task {id}");
            return Ok(ExitCode::FAILURE);
        };
        std::io::stdout().lock().write_all(&text)?;
        return Ok(ExitCode::SUCCESS);
    }
    let store = open(global).await?;
    if let Some(TasksCommand::Show { id, json }) = args.command {
        let Some(task) = store.task(&id).await? else {
            eprintln!("mcp-workers: no task with id {id}");
            return Ok(ExitCode::FAILURE);
        };
        let mut out = std::io::stdout().lock();
        if json || args.json {
            writeln!(out, "{}", serde_json::to_string_pretty(&task)?)?;
        } else {
            print_task(&mut out, &task)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let state = if args.dead { Some(TaskState::Dead) } else { args.state };
    let tasks = store.tasks(state, args.limit).await?;
    let counts = store.counts().await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&tasks)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    for t in &tasks {
        let detail = match (t.state, &t.dead_reason, &t.response) {
            (TaskState::Dead, Some(reason), _) => format!("  ({})", one_line(reason, 60)),
            (TaskState::Done, _, Some(r)) => format!("  -> {}", one_line(r, 40)),
            _ => String::new(),
        };
        writeln!(out, "{}  {:<6}  {}  {}{detail}", t.id, t.state.as_str(), t.attempts, one_line(&t.prompt, 50))?;
    }
    let c = counts;
    eprintln!("{} queued, {} leased, {} done, {} dead; {} workers", c.queued, c.leased, c.done, c.dead, c.workers);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_lines() {
        let input = "{\"prompt\": \"a\"}\n\n\"b\"\n";
        assert_eq!(read_jsonl(input.as_bytes(), "t").unwrap(), ["a", "b"]);
        for bad in ["{\"prompt\": 1}", "[1]", "nope", "{\"prompt\": \" \"}"] {
            assert!(read_jsonl(bad.as_bytes(), "t").is_err(), "{bad}");
        }
    }

    #[test]
    fn truncation() {
        assert_eq!(one_line("a\nb", 10), "a b");
        assert_eq!(one_line("abcdef", 4), "abc…");
    }
}
