CREATE TABLE polls_question (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    question_text VARCHAR(200) NOT NULL,
    pub_date TIMESTAMP NOT NULL
);
--bun:split
CREATE TABLE polls_choice (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    question_id INTEGER NOT NULL REFERENCES polls_question (id),
    choice_text VARCHAR(200) NOT NULL,
    votes INTEGER NOT NULL DEFAULT 0 CHECK (votes >= 0)
);
--bun:split
CREATE INDEX polls_choice_question_id ON polls_choice (question_id);
