//! Agents: who is connected, what they run, and who has gone quiet.

use chrono::{DateTime, Utc};
use crossterm::event::Event;
use raibid_client::AgentEntry;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Block, Cell, Paragraph, Row};

use super::columns::{self, ColumnSpec, TableColumn};
use super::nav::{MouseOutcome, TableNav};
use super::{Component, EventResult};
use crate::fmt;

/// Job ids listed in the jobs column are cut to this (their random part).
const JOB_ID_WIDTH: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Name,
    Arch,
    Pools,
    Labels,
    Jobs,
    Heartbeat,
    Done,
    Version,
}

impl Column {
    const ALL: [Column; 8] = [
        Column::Name,
        Column::Arch,
        Column::Pools,
        Column::Labels,
        Column::Jobs,
        Column::Heartbeat,
        Column::Done,
        Column::Version,
    ];
}

impl TableColumn for Column {
    fn header(self) -> &'static str {
        match self {
            Column::Name => "NAME",
            Column::Arch => "ARCH",
            Column::Pools => "POOLS",
            Column::Labels => "LABELS",
            Column::Jobs => "RUNNING",
            Column::Heartbeat => "HEARTBEAT",
            Column::Done => "DONE",
            Column::Version => "VERSION",
        }
    }

    fn spec(self) -> ColumnSpec {
        let (min, drop_rank) = match self {
            Column::Name => (16, 0),
            Column::Arch => (7, 4),
            Column::Pools => (10, 3),
            Column::Labels => (14, 5),
            Column::Jobs => (10, 2),
            Column::Heartbeat => (15, 0),
            Column::Done => (5, 1),
            Column::Version => (8, 6),
        };
        ColumnSpec { min, drop_rank }
    }
}

#[derive(Default)]
pub(crate) struct AgentsView {
    agents: Vec<AgentEntry>,
    nav: TableNav,
}

impl AgentsView {
    /// Live agents first, then stale ones, each by name.
    pub fn set_agents(&mut self, mut agents: Vec<AgentEntry>) {
        agents.sort_by(|a, b| (a.stale, &a.info.name).cmp(&(b.stale, &b.info.name)));
        self.agents = agents;
    }

    fn cell(agent: &AgentEntry, column: Column, now: DateTime<Utc>) -> Cell<'_> {
        let info = &agent.info;
        match column {
            Column::Name => Cell::from(info.name.as_str()),
            Column::Arch => Cell::from(info.arch.as_str()),
            Column::Pools => Cell::from(
                info.pools
                    .iter()
                    .map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            Column::Labels => Cell::from(
                info.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            Column::Jobs => Cell::from(if info.current_jobs.is_empty() {
                "idle".to_owned()
            } else {
                info.current_jobs
                    .iter()
                    .map(|id| fmt::short_id(id, JOB_ID_WIDTH))
                    .collect::<Vec<_>>()
                    .join(",")
            }),
            Column::Heartbeat => {
                let age = fmt::age(info.last_heartbeat, now);
                if agent.stale {
                    Cell::from(format!("{age} STALE"))
                } else {
                    Cell::from(age)
                }
            }
            Column::Done => Cell::from(info.jobs_done.to_string()),
            Column::Version => Cell::from(info.version.as_str()),
        }
    }
}

impl Component for AgentsView {
    fn handle_event(&mut self, event: &Event) -> EventResult {
        let len = self.agents.len();
        let moved = match event {
            Event::Key(key) => self.nav.handle_key(key, len),
            Event::Mouse(mouse) => self.nav.handle_mouse(mouse, len) != MouseOutcome::Outside,
            _ => false,
        };
        if moved {
            EventResult::Consumed
        } else {
            EventResult::Ignored
        }
    }

    fn draw(&mut self, frame: &mut Frame, area: Rect, now: DateTime<Utc>) {
        let stale = self.agents.iter().filter(|a| a.stale).count();
        let busy = self
            .agents
            .iter()
            .filter(|a| !a.info.current_jobs.is_empty())
            .count();
        let mut title = vec![Span::styled(
            format!(" Agents · {} · {busy} busy ", self.agents.len()),
            Style::new().add_modifier(Modifier::BOLD),
        )];
        if stale > 0 {
            title.push(Span::styled(
                format!("· {stale} stale "),
                Style::new().fg(Color::Red),
            ));
        }
        let block = Block::bordered().title(title);
        let inner = block.inner(area);
        frame.render_widget(block, area);
        if self.agents.is_empty() {
            frame.render_widget(
                Paragraph::new("no agents connected").style(Style::new().fg(Color::DarkGray)),
                inner,
            );
            return;
        }
        let kept = columns::kept(&Column::ALL, inner.width);
        let body = columns::body(inner);
        let range = self.nav.layout(body, self.agents.len());
        let selected = self.nav.selected();
        let rows = range.map(|i| {
            let agent = &self.agents[i];
            let mut style = if agent.stale {
                Style::new().fg(Color::Red).add_modifier(Modifier::DIM)
            } else {
                Style::new()
            };
            if i == selected {
                style = style.add_modifier(Modifier::REVERSED);
            }
            Row::new(kept.iter().map(|&c| Self::cell(agent, c, now))).style(style)
        });
        columns::draw_table(frame, inner, &kept, Column::Labels, rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::agent;

    #[test]
    fn stale_agents_sort_last() {
        let mut v = AgentsView::default();
        v.set_agents(vec![
            agent("zed", &["default"], None, false),
            agent("alpha", &["default"], None, true),
            agent("beta", &["default"], None, false),
        ]);
        let names: Vec<&str> = v.agents.iter().map(|a| a.info.name.as_str()).collect();
        assert_eq!(names, ["beta", "zed", "alpha"]);
    }
}
