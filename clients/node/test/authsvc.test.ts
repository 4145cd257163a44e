// The node test suite's one entry point: it starts the live servers once (see harness.ts),
// runs every group of tests against them, and stops them at the end.

import { after, before, describe } from "node:test";
import { claimsTests } from "./claims.js";
import { crashTests } from "./crash.js";
import { engineTests } from "./engines.js";
import { errorTests } from "./errors.js";
import { exactlyOnceTests } from "./exactly_once.js";
import { startServers, type Servers } from "./harness.js";
import { passwordResetTests } from "./password_reset.js";
import { readmeTests } from "./readme.js";
import { refreshTests } from "./refresh.js";
import { revocationTests } from "./revocations.js";
import { rpcTests } from "./rpcs.js";
import { scenarioTests } from "./scenarios.js";
import { secondFactorTests } from "./second_factors.js";
import { verifierTests } from "./verifier.js";

describe("authsvc node client against a live server", () => {
  let started: Awaited<ReturnType<typeof startServers>> | undefined;
  const servers = (): Servers => {
    if (started === undefined) {
      throw new Error("servers not started (see the before hook's failure)");
    }
    return started.servers;
  };

  before(async () => {
    started = await startServers();
  });
  after(async () => {
    await started?.stop();
  });

  rpcTests(servers);
  refreshTests(servers);
  exactlyOnceTests(servers);
  scenarioTests(servers);
  errorTests(servers);
  readmeTests(servers);
  claimsTests(servers);
  verifierTests(servers);
  revocationTests(servers);
  passwordResetTests(servers);
  secondFactorTests(servers);
});

engineTests();
crashTests();
