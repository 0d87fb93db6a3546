DROP TABLE polls_choice;
--bun:split
DROP TABLE polls_question;
