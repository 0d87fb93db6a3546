ALTER TABLE polls_question ADD COLUMN owner VARCHAR(150) NOT NULL DEFAULT '';
--bun:split
ALTER TABLE polls_question ADD COLUMN published BOOLEAN NOT NULL DEFAULT 1;
--bun:split
ALTER TABLE polls_choice ADD COLUMN question_owner VARCHAR(150) NOT NULL DEFAULT '';
--bun:split
ALTER TABLE polls_choice ADD COLUMN question_published BOOLEAN NOT NULL DEFAULT 1;
