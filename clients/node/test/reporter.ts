// A quiet node:test reporter for `make test`: nothing per passing test, every failure in
// full, then one closing line "N passed, N failed" (", N skipped" when some were).

import { inspect } from "node:util";
import type { TestEvent } from "node:test/reporters";

interface WrappedError extends Error {
  failureType?: string;
}

function describeFailure(error: WrappedError): string {
  const cause = error.cause ?? error;
  return inspect(cause, { depth: 4 })
    .split("\n")
    .map((line) => `    ${line}`)
    .join("\n");
}

export default async function* quiet(source: AsyncIterable<TestEvent>): AsyncGenerator<string> {
  const names: string[] = [];
  let passed = 0;
  let failed = 0;
  let skipped = 0;
  for await (const event of source) {
    switch (event.type) {
      case "test:start":
        names[event.data.nesting] = event.data.name;
        break;
      case "test:pass":
        if (event.data.details.type !== "suite") {
          if (event.data.skip !== undefined || event.data.todo !== undefined) {
            skipped++;
          } else {
            passed++;
          }
        }
        break;
      case "test:fail": {
        const error = event.data.details.error as WrappedError;
        if (event.data.details.type !== "suite") {
          failed++;
        }
        // A suite "fails" when a test in it did, and tests are cancelled when a hook above
        // them failed: print only the failures that are their own (the hook's included).
        if (error.failureType !== "subtestsFailed" && error.failureType !== "cancelledByParent") {
          const path = [...names.slice(0, event.data.nesting), event.data.name].join(" > ");
          yield `FAIL ${path}\n${describeFailure(error)}\n`;
        }
        break;
      }
      case "test:stdout":
      case "test:stderr":
        yield event.data.message;
        break;
      default:
        break;
    }
  }
  yield `${passed} passed, ${failed} failed${skipped > 0 ? `, ${skipped} skipped` : ""}\n`;
}
