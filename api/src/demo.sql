-- The demo schema: a todo app.
CREATE NAMESPACE IF NOT EXISTS app;

-- Each user sees only their own todos.
CREATE TABLE IF NOT EXISTS app.todos (
    id BIGINT PRIMARY KEY DEFAULT SNOWFLAKE_ID(),
    title TEXT NOT NULL,
    done BOOLEAN NOT NULL DEFAULT false,
    priority INT DEFAULT 0,
    created_at TIMESTAMP DEFAULT NOW()
) WITH (TYPE = 'USER');

-- Everyone signed in reads announcements; service and above write them.
CREATE TABLE IF NOT EXISTS app.announcements (
    id BIGINT PRIMARY KEY DEFAULT SNOWFLAKE_ID(),
    message TEXT NOT NULL,
    created_at TIMESTAMP DEFAULT NOW()
) WITH (TYPE = 'SHARED', ACCESS_LEVEL = 'PUBLIC');

-- Short-lived typing notifications, gone after a minute.
CREATE TABLE IF NOT EXISTS app.typing (
    id BIGINT PRIMARY KEY DEFAULT SNOWFLAKE_ID(),
    conversation TEXT NOT NULL,
    created_at TIMESTAMP DEFAULT NOW()
) WITH (TYPE = 'STREAM', TTL_SECONDS = 60);
