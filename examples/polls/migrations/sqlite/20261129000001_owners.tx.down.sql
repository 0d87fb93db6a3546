ALTER TABLE polls_choice DROP COLUMN question_published;
--bun:split
ALTER TABLE polls_choice DROP COLUMN question_owner;
--bun:split
ALTER TABLE polls_question DROP COLUMN published;
--bun:split
ALTER TABLE polls_question DROP COLUMN owner;
