//! Pools: how much work waits, how much runs, who could take it, and how the queue moved over
//! the last minutes.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};
use crossterm::event::{Event, KeyCode};
use raibid_client::AgentEntry;
use raibid_model::{PoolName, PoolStats, ScalerStatus};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Block, Cell, Paragraph, Row};

use super::columns::{self, ColumnSpec, TableColumn};
use super::nav::TableNav;
use super::{Action, Command, Component, EventResult};
use crate::fmt;

/// How far back the queue-depth sparkline reaches.
const HISTORY: chrono::Duration = chrono::Duration::minutes(10);
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Pool,
    Queued,
    Running,
    Length,
    Oldest,
    Dead,
    Agents,
    Scaler,
    History,
}

impl Column {
    const ALL: [Column; 9] = [
        Column::Pool,
        Column::Queued,
        Column::Running,
        Column::Length,
        Column::Oldest,
        Column::Dead,
        Column::Agents,
        Column::Scaler,
        Column::History,
    ];
}

impl TableColumn for Column {
    fn header(self) -> &'static str {
        match self {
            Column::Pool => "POOL",
            Column::Queued => "QUEUED",
            Column::Running => "RUNNING",
            Column::Length => "LENGTH",
            Column::Oldest => "OLDEST",
            Column::Dead => "DEAD",
            Column::Agents => "AGENTS",
            Column::Scaler => "SCALER",
            Column::History => "LAST 10 MIN",
        }
    }

    fn spec(self) -> ColumnSpec {
        let (min, drop_rank) = match self {
            Column::Pool => (12, 0),
            Column::Queued => (7, 0),
            Column::Running => (8, 0),
            Column::Length => (7, 6),
            Column::Oldest => (7, 2),
            Column::Dead => (5, 3),
            Column::Agents => (7, 4),
            Column::Scaler => (9, 5),
            Column::History => (14, 1),
        };
        ColumnSpec { min, drop_rank }
    }
}

/// Agents serving a pool, from the agents list.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct PoolAgents {
    live: usize,
    busy: usize,
}

#[derive(Default)]
pub(crate) struct QueuesView {
    pools: Vec<PoolStats>,
    scalers: BTreeMap<PoolName, ScalerStatus>,
    agents: BTreeMap<PoolName, PoolAgents>,
    /// Queued jobs per pool as sampled by the poller, oldest first.
    history: BTreeMap<PoolName, VecDeque<(DateTime<Utc>, u64)>>,
    nav: TableNav,
}

impl QueuesView {
    pub fn set_pools(
        &mut self,
        pools: Vec<PoolStats>,
        scalers: Vec<ScalerStatus>,
        at: DateTime<Utc>,
    ) {
        self.scalers = scalers.into_iter().map(|s| (s.pool.clone(), s)).collect();
        for pool in &pools {
            self.history
                .entry(pool.pool.clone())
                .or_default()
                .push_back((at, pool.lag));
        }
        for samples in self.history.values_mut() {
            while samples.front().is_some_and(|(t, _)| *t < at - HISTORY) {
                samples.pop_front();
            }
        }
        self.history.retain(|_, samples| !samples.is_empty());
        self.pools = pools;
    }

    pub fn set_agents(&mut self, agents: &[AgentEntry]) {
        self.agents.clear();
        for agent in agents.iter().filter(|a| !a.stale) {
            for pool in &agent.info.pools {
                let counts = self.agents.entry(pool.clone()).or_default();
                counts.live += 1;
                counts.busy += usize::from(!agent.info.current_jobs.is_empty());
            }
        }
    }

    fn cell<'a>(
        &'a self,
        pool: &'a PoolStats,
        column: Column,
        width: u16,
        now: DateTime<Utc>,
    ) -> Cell<'a> {
        match column {
            // A paused pool's queue grows on purpose: say so where the eye starts (the line
            // under the table says who paused it and why).
            Column::Pool if pool.paused.is_some() => Cell::from(Span::styled(
                pool.pool.as_str(),
                Style::new().fg(Color::Magenta),
            )),
            Column::Pool => Cell::from(pool.pool.as_str()),
            Column::Queued => {
                let style = if pool.lag > 0 {
                    Style::new().fg(Color::Yellow)
                } else {
                    Style::new()
                };
                Cell::from(Span::styled(pool.lag.to_string(), style))
            }
            Column::Running => Cell::from(pool.pending.to_string()),
            Column::Length => Cell::from(pool.length.to_string()),
            Column::Oldest => Cell::from(
                pool.oldest_queued_ms
                    .map(fmt::millis)
                    .unwrap_or_else(|| "-".into()),
            ),
            Column::Dead => {
                let style = if pool.dead_letters > 0 {
                    Style::new().fg(Color::Red)
                } else {
                    Style::new()
                };
                Cell::from(Span::styled(pool.dead_letters.to_string(), style))
            }
            Column::Agents => {
                let a = self.agents.get(&pool.pool).copied().unwrap_or_default();
                Cell::from(format!("{}/{}", a.busy, a.live))
            }
            // Agents the autoscaler keeps now out of its maximum, and how many it just started.
            // Pools no autoscaler watches (KEDA reports nothing here) show n/a.
            Column::Scaler if pool.paused.is_some() => {
                Cell::from(Span::styled("paused", Style::new().fg(Color::Magenta)))
            }
            Column::Scaler => match self.scalers.get(&pool.pool) {
                Some(s) if s.started > 0 => {
                    Cell::from(format!("{}/{} +{}", s.agents, s.max_agents, s.started))
                }
                Some(s) => Cell::from(format!("{}/{}", s.agents, s.max_agents)),
                None => Cell::from(Span::styled("n/a", Style::new().fg(Color::DarkGray))),
            },
            Column::History => Cell::from(Span::styled(
                self.sparkline(&pool.pool, usize::from(width), now),
                Style::new().fg(Color::Cyan),
            )),
        }
    }

    /// `width` buckets over the last ten minutes, each the highest depth sampled in it, scaled
    /// to the highest of the window. A bucket without a sample repeats the one before (the
    /// depth holds until the next sample says otherwise); before the first sample it is blank.
    /// Ends with the maximum.
    fn sparkline(&self, pool: &PoolName, width: usize, now: DateTime<Utc>) -> String {
        let Some(samples) = self.history.get(pool) else {
            return String::new();
        };
        let peak = samples.iter().map(|(_, v)| *v).max().unwrap_or(0);
        let label = format!(" max {peak}");
        let buckets = width.saturating_sub(label.len()).max(1);
        let mut highest: Vec<Option<u64>> = vec![None; buckets];
        let span_ms = HISTORY.num_milliseconds();
        let start = now - HISTORY;
        for (at, value) in samples {
            let offset = (*at - start).num_milliseconds();
            if !(0..=span_ms).contains(&offset) {
                continue;
            }
            let i = usize::try_from(offset * buckets as i64 / (span_ms + 1)).unwrap_or(0);
            let slot = &mut highest[i.min(buckets - 1)];
            *slot = Some(slot.map_or(*value, |v| v.max(*value)));
        }
        let mut held = None;
        for bucket in &mut highest {
            match bucket {
                Some(v) => held = Some(*v),
                None => *bucket = held,
            }
        }
        let mut line: String = highest
            .into_iter()
            .map(|bucket| match bucket {
                None => ' ',
                Some(0) => BARS[0],
                Some(v) => {
                    let level = (v * (BARS.len() as u64 - 1)).div_ceil(peak.max(1));
                    BARS[usize::try_from(level)
                        .unwrap_or(BARS.len() - 1)
                        .min(BARS.len() - 1)]
                }
            })
            .collect();
        line.push_str(&label);
        line
    }
}

impl Component for QueuesView {
    fn handle_event(&mut self, event: &Event) -> EventResult {
        let len = self.pools.len();
        if let Event::Key(key) = event
            && key.code == KeyCode::Char('p')
            && let Some(pool) = self.pools.get(self.nav.selected())
        {
            let name = pool.pool.clone();
            return EventResult::Action(match &pool.paused {
                Some(_) => Action::Confirm {
                    prompt: format!(
                        "Resume pool {name}? Agents take its {} queued job(s).",
                        pool.lag
                    ),
                    command: Command::ResumePool(name),
                },
                None => Action::Confirm {
                    prompt: format!(
                        "Pause pool {name}? Its jobs wait, queued, until it is resumed; running \
                         ones go on."
                    ),
                    command: Command::PausePool(name),
                },
            });
        }
        let moved = match event {
            Event::Key(key) => self.nav.handle_key(key, len),
            Event::Mouse(mouse) => {
                self.nav.handle_mouse(mouse, len) != super::nav::MouseOutcome::Outside
            }
            _ => false,
        };
        if moved {
            EventResult::Consumed
        } else {
            EventResult::Ignored
        }
    }

    fn draw(&mut self, frame: &mut Frame, area: Rect, now: DateTime<Utc>) {
        let queued: u64 = self.pools.iter().map(|p| p.lag).sum();
        let running: u64 = self.pools.iter().map(|p| p.pending).sum();
        let block = Block::bordered().title(Span::styled(
            format!(" Queues · {queued} queued · {running} running "),
            Style::new().add_modifier(Modifier::BOLD),
        ));
        let inner = block.inner(area);
        frame.render_widget(block, area);
        if self.pools.is_empty() {
            frame.render_widget(
                Paragraph::new("no pools reported yet").style(Style::new().fg(Color::DarkGray)),
                inner,
            );
            return;
        }
        // Who paused which pool and why, under the table: the table has no room for it.
        let notes: Vec<String> = self
            .pools
            .iter()
            .filter_map(|p| Some(format!("{} {}", p.pool, p.paused.as_ref()?.describe(now))))
            .collect();
        let note_lines = (notes.len() as u16).min(inner.height.saturating_sub(3) / 2);
        let [inner, notes_area] =
            Layout::vertical([Constraint::Fill(1), Constraint::Length(note_lines)]).areas(inner);
        frame.render_widget(
            Paragraph::new(notes.join("\n")).style(Style::new().fg(Color::Magenta)),
            notes_area,
        );
        let kept = columns::kept(&Column::ALL, inner.width);
        let fixed: u16 = kept
            .iter()
            .filter(|c| **c != Column::History)
            .map(|c| c.spec().min + columns::SPACING)
            .sum();
        let history_width = inner.width.saturating_sub(fixed);
        let body = columns::body(inner);
        let range = self.nav.layout(body, self.pools.len());
        let selected = self.nav.selected();
        let rows = range.map(|i| {
            let pool = &self.pools[i];
            let row = Row::new(kept.iter().map(|&c| self.cell(pool, c, history_width, now)));
            if i == selected {
                row.style(Style::new().add_modifier(Modifier::REVERSED))
            } else {
                row
            }
        });
        columns::draw_table(frame, inner, &kept, Column::History, rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{agent, at, pool};

    #[test]
    fn history_keeps_ten_minutes_of_samples() {
        let mut v = QueuesView::default();
        for minute in 0..15 {
            v.set_pools(
                vec![pool("default", minute)],
                vec![],
                at(minute as i64 * 60),
            );
        }
        let samples = &v.history[&PoolName::default()];
        assert_eq!(samples.len(), 11);
        assert_eq!(samples.front().unwrap().1, 4);
    }

    #[test]
    fn sparkline_scales_to_the_peak_and_holds_between_samples() {
        let mut v = QueuesView::default();
        let now = at(600);
        v.set_pools(vec![pool("default", 0)], vec![], at(120));
        v.set_pools(vec![pool("default", 4)], vec![], at(300));
        v.set_pools(vec![pool("default", 8)], vec![], now);
        let line = v.sparkline(&PoolName::default(), 10 + " max 8".len(), now);
        assert_eq!(line, " ▁▁▁▅▅▅▅▅█ max 8");
        assert_eq!(v.sparkline(&PoolName::new("gpu").unwrap(), 20, now), "");
    }

    #[test]
    fn agents_are_counted_per_pool_without_stale_ones() {
        let mut v = QueuesView::default();
        v.set_agents(&[
            agent("a", &["default"], Some("01"), false),
            agent("b", &["default", "gpu"], None, false),
            agent("c", &["gpu"], Some("02"), true),
        ]);
        assert_eq!(
            v.agents[&PoolName::default()],
            PoolAgents { live: 2, busy: 1 }
        );
        assert_eq!(
            v.agents[&PoolName::new("gpu").unwrap()],
            PoolAgents { live: 1, busy: 0 }
        );
    }
}
