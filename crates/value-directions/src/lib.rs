//! value-directions
