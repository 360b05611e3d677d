-- A small table for the examples (run as a role that can create tables in `orders`).
CREATE TABLE IF NOT EXISTS customers (
    id int PRIMARY KEY,
    name text,
    email text,
    card_number text
);
INSERT INTO customers VALUES
    (1, 'Ada', 'ada@example.com', '4111111111111111'),
    (2, 'Grace', 'grace@example.com', '5555555555554444'),
    (3, 'Alan', 'alan@example.com', '4012888888881881'),
    (4, 'Edsger', 'edsger@example.com', '378282246310005'),
    (5, 'Barbara', 'barbara@example.com', '6011111111111117')
ON CONFLICT (id) DO NOTHING;
