// The bench's TypeScript peer: better-auth (its PostgreSQL adapter over `pg`) behind a
// plain Node HTTP server, as an application would mount it.
//
//   node server.mjs migrate   create better-auth's tables (schema PEER_SCHEMA)
//   node server.mjs serve     serve /api/auth/* on 127.0.0.1, a port the kernel picks
//
// Environment: PEER_DATABASE_URL (and PGPASSWORD if it holds none), PEER_SCHEMA,
// PEER_SECRET (the bench signs the seeded session cookies with it), PEER_POOL_MAX
// (authsvc's pool size, for a like comparison).
import http from "node:http";
import pg from "pg";
import { betterAuth } from "better-auth";
import { getMigrations } from "better-auth/db/migration";
import { toNodeHandler } from "better-auth/node";

const schema = process.env.PEER_SCHEMA ?? "better_auth";
const pool = new pg.Pool({
  connectionString: process.env.PEER_DATABASE_URL,
  max: Number(process.env.PEER_POOL_MAX ?? 10),
  options: `-c search_path=${schema}`,
});
const auth = betterAuth({
  database: pool,
  secret: process.env.PEER_SECRET,
  baseURL: "http://127.0.0.1",
  emailAndPassword: { enabled: true },
  // The bench measures session checks, not the limiter (authsvc's is raised likewise).
  rateLimit: { enabled: false },
  telemetry: { enabled: false },
  logger: { disabled: true },
});

const command = process.argv[2];
if (command === "migrate") {
  const client = await pool.connect();
  await client.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
  client.release();
  const { runMigrations } = await getMigrations(auth.options);
  await runMigrations();
  await pool.end();
} else if (command === "serve") {
  const server = http.createServer(toNodeHandler(auth));
  server.keepAliveTimeout = 60_000;
  server.listen(0, "127.0.0.1", () => {
    const { port } = server.address();
    console.error(`better-auth peer: serving HTTP on 127.0.0.1:${port}`);
  });
  for (const signal of ["SIGTERM", "SIGINT"]) {
    process.on(signal, () => server.close(() => pool.end().then(() => process.exit(0))));
  }
} else {
  console.error("usage: node server.mjs migrate|serve");
  process.exit(2);
}
