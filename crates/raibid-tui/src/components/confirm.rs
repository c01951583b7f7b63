//! "Are you sure?" before anything that changes a job.

use chrono::{DateTime, Utc};
use crossterm::event::{Event, KeyCode};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use super::{Action, Command, Component, EventResult, centered};

pub(crate) struct Confirm {
    prompt: String,
    command: Command,
}

impl Confirm {
    pub fn new(prompt: String, command: Command) -> Self {
        Self { prompt, command }
    }
}

impl Component for Confirm {
    /// `y` or Enter runs the command; `n` or Esc drops it; other keys are swallowed so that
    /// nothing happens behind the question.
    fn handle_event(&mut self, event: &Event) -> EventResult {
        let Event::Key(key) = event else {
            return EventResult::Consumed;
        };
        match key.code {
            KeyCode::Char('y' | 'Y') | KeyCode::Enter => {
                EventResult::Action(Action::Run(self.command.clone()))
            }
            KeyCode::Char('n' | 'N') | KeyCode::Esc => EventResult::Action(Action::Dismiss),
            _ => EventResult::Consumed,
        }
    }

    fn draw(&mut self, frame: &mut Frame, area: Rect, _now: DateTime<Utc>) {
        let popup = centered(area, 60, 6);
        let text = vec![
            Line::from(Span::styled(
                self.prompt.as_str(),
                Style::new().add_modifier(Modifier::BOLD),
            )),
            Line::default(),
            Line::from(vec![
                Span::styled("y", Style::new().fg(Color::Green)),
                Span::raw(" yes   "),
                Span::styled("n", Style::new().fg(Color::Red)),
                Span::raw(" no"),
            ]),
        ];
        frame.render_widget(Clear, popup);
        frame.render_widget(
            Paragraph::new(text).wrap(Wrap { trim: true }).block(
                Block::bordered()
                    .title(" Confirm ")
                    .border_style(Style::new().fg(Color::Yellow)),
            ),
            popup,
        );
    }
}
