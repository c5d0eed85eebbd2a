-- The dashboard's and API's most common listing: tasks of one route in some statuses, newest first
-- (``WHERE route = ? AND status IN (...) ORDER BY id DESC``). Without this index SQLite walks
-- tasks_status_id past every other route's rows: 160 ms for the first page at 1M tasks, 0.2 ms with it.
CREATE INDEX tasks_route_status_id ON tasks (route, status, id);
