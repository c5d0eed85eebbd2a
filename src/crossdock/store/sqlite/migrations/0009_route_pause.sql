-- Auto-pause (route key pause_after): why and when a route was switched off by crossdock itself, shown until a
-- person activates it again (which clears both).
ALTER TABLE route_state ADD COLUMN paused_reason TEXT;
ALTER TABLE route_state ADD COLUMN paused_at REAL;
