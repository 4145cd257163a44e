// The page's files, read once at start: the HTML and CSS of static/ and the compiled page
// scripts of build/public/. Only these paths are served; nothing else on disk is reachable.

import { readdir, readFile } from "node:fs/promises";
import path from "node:path";

export interface StaticFile {
  body: Buffer;
  type: string;
}

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".svg": "image/svg+xml",
};

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((entry) => entry.isFile()).map((entry) => path.join(entry.parentPath, entry.name));
}

/**
 * URL path -> file: `/` and `/login` are static/index.html and static/login.html,
 * `/assets/<name>` the rest of static/, `/assets/js/<path>.js` the compiled scripts.
 */
export async function loadStaticFiles(root: string): Promise<Map<string, StaticFile>> {
  const files = new Map<string, StaticFile>();
  const add = async (urlPath: string, file: string) => {
    const type = TYPES[path.extname(file)];
    if (type !== undefined) {
      files.set(urlPath, { body: await readFile(file), type });
    }
  };
  const staticDir = path.join(root, "static");
  for (const file of await filesUnder(staticDir)) {
    await add(`/assets/${path.relative(staticDir, file).split(path.sep).join("/")}`, file);
  }
  const scriptsDir = path.join(root, "build", "public");
  for (const file of await filesUnder(scriptsDir)) {
    if (file.endsWith(".js")) {
      await add(`/assets/js/${path.relative(scriptsDir, file).split(path.sep).join("/")}`, file);
    }
  }
  for (const [page, name] of [
    ["/", "index.html"],
    ["/login", "login.html"],
  ] as const) {
    const file = files.get(`/assets/${name}`);
    if (file === undefined) {
      throw new Error(`static/${name} is missing`);
    }
    files.set(page, file);
    files.delete(`/assets/${name}`);
  }
  return files;
}
