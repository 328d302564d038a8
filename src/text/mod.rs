//! Text formats (placeholder).
