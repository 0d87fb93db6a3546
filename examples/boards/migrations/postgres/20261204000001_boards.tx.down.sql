DROP TABLE board_card;
--bun:split
DROP TABLE board_column;
--bun:split
DROP TABLE board_member;
--bun:split
DROP TABLE board_board;
