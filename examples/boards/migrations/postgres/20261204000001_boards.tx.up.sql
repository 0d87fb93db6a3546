CREATE TABLE board_board (
    id BIGSERIAL PRIMARY KEY,
    name VARCHAR(100) NOT NULL,
    owner VARCHAR(150) NOT NULL
);
--bun:split
CREATE TABLE board_member (
    id BIGSERIAL PRIMARY KEY,
    board_id BIGINT NOT NULL REFERENCES board_board (id),
    user_id VARCHAR(150) NOT NULL,
    UNIQUE (board_id, user_id)
);
--bun:split
CREATE INDEX board_member_user ON board_member (user_id, board_id);
--bun:split
CREATE TABLE board_column (
    id BIGSERIAL PRIMARY KEY,
    board_id BIGINT NOT NULL REFERENCES board_board (id),
    name VARCHAR(100) NOT NULL,
    position BIGINT NOT NULL DEFAULT 0 CHECK (position >= 0)
);
--bun:split
CREATE INDEX board_column_board ON board_column (board_id);
--bun:split
CREATE TABLE board_card (
    id BIGSERIAL PRIMARY KEY,
    column_id BIGINT NOT NULL REFERENCES board_column (id),
    board_id BIGINT NOT NULL REFERENCES board_board (id),
    title VARCHAR(200) NOT NULL,
    position BIGINT NOT NULL DEFAULT 0 CHECK (position >= 0),
    assignee VARCHAR(150)
);
--bun:split
CREATE INDEX board_card_board ON board_card (board_id);
--bun:split
CREATE INDEX board_card_column ON board_card (column_id, position);
