// "2 hours ago" with Intl.RelativeTimeFormat, in the largest unit that fits.

const format = new Intl.RelativeTimeFormat("en", { numeric: "auto" });

const UNITS: readonly [Intl.RelativeTimeFormatUnit, number][] = [
  ["year", 365 * 24 * 3600],
  ["month", 30 * 24 * 3600],
  ["week", 7 * 24 * 3600],
  ["day", 24 * 3600],
  ["hour", 3600],
  ["minute", 60],
];

/** How long ago `instant` was, e.g. "2 hours ago", "yesterday", "just now". */
export function timeAgo(instant: Date, now: Date = new Date()): string {
  const seconds = Math.round((instant.getTime() - now.getTime()) / 1000);
  if (seconds > -45) {
    return "just now";
  }
  for (const [unit, size] of UNITS) {
    if (-seconds >= size) {
      return format.format(Math.round(seconds / size), unit);
    }
  }
  return format.format(Math.round(seconds / 60), "minute");
}
