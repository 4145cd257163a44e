// JSON lines on stdout with stable keys (`event` first). Callers pass ids and reasons only:
// never a token, a password, an email or the cookie's session id.

export type LogFields = Record<string, string | number | boolean | undefined>;

export function log(event: string, fields: LogFields = {}): void {
  process.stdout.write(`${JSON.stringify({ event, time: new Date().toISOString(), ...fields })}\n`);
}
