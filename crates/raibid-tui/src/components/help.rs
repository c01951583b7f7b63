//! The key bindings, over whatever screen is showing.

use chrono::{DateTime, Utc};
use crossterm::event::Event;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use super::{Action, Component, EventResult, centered};

const BINDINGS: &[(&str, &[(&str, &str)])] = &[
    (
        "Everywhere",
        &[
            ("1-5, Tab, S-Tab", "switch screen (or click its name)"),
            // One line for both, so that the Job section's keys fit in 24 rows.
            ("? · q, Ctrl-C", "this help · quit"),
        ],
    ),
    (
        "Jobs",
        &[
            ("j k ↑ ↓ PgUp PgDn", "move (Home/g, End/G: ends)"),
            ("Enter, click", "open the job"),
            ("/", "filter by repo, branch or status"),
            ("s, S", "next sort column, reverse order"),
            ("Esc", "clear the filter"),
        ],
    ),
    (
        "Job",
        &[
            ("f", "follow the log on/off"),
            ("j k PgUp PgDn g G", "scroll the log (wheel too)"),
            ("[ ]", "scroll the steps (wheel too)"),
            ("/, n, N", "search, next match, previous"),
            ("c, r, R, a", "cancel, retry (R: failed), approve"),
            ("y", "copy the job id (OSC 52)"),
            ("Esc", "back to the jobs"),
        ],
    ),
    (
        "Queues, Agents",
        &[("j k ↑ ↓ wheel · p", "move · pause or resume (Queues)")],
    ),
];

const KEY_WIDTH: usize = 20;

pub(crate) struct Help;

impl Component for Help {
    /// Any key or click closes it.
    fn handle_event(&mut self, event: &Event) -> EventResult {
        match event {
            Event::Key(_)
            | Event::Mouse(crossterm::event::MouseEvent {
                kind: crossterm::event::MouseEventKind::Down(_),
                ..
            }) => EventResult::Action(Action::Dismiss),
            _ => EventResult::Consumed,
        }
    }

    fn draw(&mut self, frame: &mut Frame, area: Rect, _now: DateTime<Utc>) {
        let needed = BINDINGS
            .iter()
            .map(|(_, keys)| keys.len() + 2)
            .sum::<usize>()
            + 1;
        // Blank lines between sections only when everything still fits.
        let spaced = needed <= usize::from(area.height);
        let mut lines = Vec::new();
        for (section, keys) in BINDINGS {
            if spaced && !lines.is_empty() {
                lines.push(Line::default());
            }
            lines.push(Line::from(Span::styled(
                *section,
                Style::new().add_modifier(Modifier::BOLD),
            )));
            for (key, what) in *keys {
                lines.push(Line::from(vec![
                    Span::styled(format!("  {key:<KEY_WIDTH$}"), Style::new().fg(Color::Cyan)),
                    Span::raw(*what),
                ]));
            }
        }
        let height = u16::try_from(lines.len() + 2).unwrap_or(u16::MAX);
        let popup = centered(area, 62, height);
        frame.render_widget(Clear, popup);
        frame.render_widget(
            Paragraph::new(lines).block(Block::bordered().title(" Keys · any key closes ")),
            popup,
        );
    }
}
