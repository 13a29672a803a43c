/* The agent's token for this browser tab, shared by the console and the dashboard:
 * signing in to one signs in to the other. Kept in sessionStorage, so it goes when the
 * tab closes; where storage is unavailable (some private modes) the page just asks again. */
window.agentToken = (function () {
  "use strict";
  const KEY = "agent.token";
  return {
    read() { try { return sessionStorage.getItem(KEY); } catch (e) { return null; } },
    save(token) { try { sessionStorage.setItem(KEY, token); } catch (e) { /* see above */ } },
    clear() { try { sessionStorage.removeItem(KEY); } catch (e) { /* see above */ } },
  };
}());
