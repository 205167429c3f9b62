import type { FleetApi } from '../api.js';
import type { StoredEvent } from '../live-feed.js';

/** What every view gets from the shell: the API with the session's token, and the page's parameters. */
export interface ViewContext {
  api: FleetApi;
  params: URLSearchParams;
}

/** A rendered view: its element, and how it takes a live event (refetching what it shows). */
export interface View {
  element: HTMLElement;
  title: string;
  onStored?(event: StoredEvent): Promise<void>;
}
