//! The only code that spawns and kills Claude Code workers.
