CREATE TABLE storetest_widget (
    id bigserial PRIMARY KEY,
    name varchar(100) NOT NULL UNIQUE,
    size bigint NOT NULL DEFAULT 0
);
--bun:split
-- Writes made outside streamapi are logged by a trigger; the store's own
-- writes must still be logged once.
SELECT streamapi_track('storetest_widget', 'storetest.widget');
