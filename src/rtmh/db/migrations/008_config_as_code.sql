-- RTMH 008: rules, channels and silences declared in YAML files (`rtmh config apply`).
--
-- managed_by: the path of the file that declares the row, as given to `rtmh config apply`
-- (NULL: made by hand, through the API or the CLI). `apply --prune` removes only rows whose
-- managed_by is set, and the API refuses to edit a managed rule unless forced, so a file and the
-- database do not drift apart without anyone noticing.
--
-- silences.name: a declared silence's identity across applies (silences otherwise have only an
-- id, and the same matchers may be silenced twice on purpose). One name is one silence for
-- ever: an ended silence keeps its name, so a file that still lists it does not silently mute
-- again; a new silence takes a new name. Hand-made silences have no name.
--
-- Columns only, no new table and no foreign key: the Citus plan (scaling.md) keeps these tables
-- local and is not affected.

ALTER TABLE alert_rules ADD COLUMN managed_by text
    CONSTRAINT alert_rules_managed_by_not_blank CHECK (managed_by IS NULL OR btrim(managed_by) <> '');

ALTER TABLE notification_channels ADD COLUMN managed_by text
    CONSTRAINT notification_channels_managed_by_not_blank
    CHECK (managed_by IS NULL OR btrim(managed_by) <> '');

ALTER TABLE silences ADD COLUMN name text
    CONSTRAINT silences_name_format CHECK (name IS NULL OR name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$');
ALTER TABLE silences ADD COLUMN managed_by text
    CONSTRAINT silences_managed_by_not_blank CHECK (managed_by IS NULL OR btrim(managed_by) <> '');

CREATE UNIQUE INDEX uq_silences_name ON silences (name) WHERE name IS NOT NULL;
