-- Listing one route's tasks newest first when the status filter includes finished or skipped (which the partial
-- status indexes leave out): walk the route's ids instead of every route's rows. It never changes when a status
-- does, so delivering costs it nothing; only imports add to it.
CREATE INDEX tasks_route_id ON tasks (route, id);
