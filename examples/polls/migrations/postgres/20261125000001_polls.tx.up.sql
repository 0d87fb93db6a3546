CREATE TABLE polls_question (
    id bigserial PRIMARY KEY,
    question_text varchar(200) NOT NULL,
    pub_date timestamptz NOT NULL
);
--bun:split
CREATE TABLE polls_choice (
    id bigserial PRIMARY KEY,
    question_id bigint NOT NULL REFERENCES polls_question (id),
    choice_text varchar(200) NOT NULL,
    votes bigint NOT NULL DEFAULT 0 CHECK (votes >= 0)
);
--bun:split
CREATE INDEX polls_choice_question_id ON polls_choice (question_id);
--bun:split
-- Writes made outside streamapi (psql, another service) reach subscribers:
-- a trigger logs them in the change log and NOTIFYs the nodes.
SELECT streamapi_track('polls_question', 'polls.question');
--bun:split
SELECT streamapi_track('polls_choice', 'polls.choice');
