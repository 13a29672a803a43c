"""The GraphQL documents the Shopify backend sends, with Shopify's own type and field
names (Admin API, the version pinned by SHOPIFY_API_VERSION). Page sizes keep each
query well under Shopify's 1,000-point limit per query."""
from __future__ import annotations

ORDERS_PER_PAGE = 8
# the light reading of a scan: enough to know each order's state (about 10 points each)
STATES_PER_PAGE = 50

ORDER_FIELDS = """
fragment OrderFields on Order {
  id name createdAt cancelledAt
  displayFinancialStatus displayFulfillmentStatus paymentGatewayNames
  totalPriceSet { shopMoney { amount currencyCode } }
  customer { id displayName email phone }
  shippingAddress { name address1 address2 city zip countryCodeV2 }
  billingAddress { name address1 address2 city zip countryCodeV2 }
  lineItems(first: 10) {
    nodes {
      id sku name quantity unfulfilledQuantity originalUnitPriceSet { shopMoney { amount } }
    }
  }
  fulfillments(first: 3) {
    id status displayStatus createdAt deliveredAt estimatedDeliveryAt
    trackingInfo(first: 1) { company number url }
    events(first: 10) { nodes { status happenedAt message city } }
  }
  refunds(first: 5) {
    id createdAt note
    totalRefundedSet { shopMoney { amount currencyCode } }
    transactions(first: 2) { nodes { status processedAt } }
  }
  returns(first: 2) { nodes { id name status } }
}
"""

ORDERS = ORDER_FIELDS + """
query Orders($query: String!, $first: Int!, $after: String) {
  orders(first: $first, after: $after, query: $query, sortKey: CREATED_AT, reverse: true) {
    nodes { ...OrderFields }
    pageInfo { hasNextPage endCursor }
  }
}
"""

ORDER_STATES = """
query OrderStates($query: String!, $first: Int!, $after: String) {
  orders(first: $first, after: $after, query: $query, sortKey: CREATED_AT, reverse: true) {
    nodes {
      id name createdAt cancelledAt displayFulfillmentStatus
      fulfillments(first: 3) { createdAt deliveredAt }
      returns(first: 2) { nodes { status } }
    }
    pageInfo { hasNextPage endCursor }
  }
}
"""

ORDER = ORDER_FIELDS + """
query Order($id: ID!) {
  order(id: $id) { ...OrderFields }
}
"""

CUSTOMERS_BY_PHONE = """
query CustomersByPhone($query: String!) {
  customers(first: 5, query: $query) { nodes { id phone } }
}
"""

ORDER_CANCEL = """
mutation OrderCancel($orderId: ID!, $reason: OrderCancelReason!, $staffNote: String) {
  orderCancel(orderId: $orderId, reason: $reason, restock: true, notifyCustomer: true,
              refundMethod: {originalPaymentMethodsRefund: true}, staffNote: $staffNote) {
    job { id done }
    orderCancelUserErrors { field message code }
  }
}
"""

JOB = """
query Job($id: ID!) {
  job(id: $id) { id done }
}
"""

ORDER_UPDATE = """
mutation OrderUpdate($input: OrderInput!) {
  orderUpdate(input: $input) {
    order { id }
    userErrors { field message }
  }
}
"""

SUGGESTED_REFUND = """
query SuggestedRefund($id: ID!) {
  order(id: $id) {
    suggestedRefund(suggestFullRefund: true) {
      suggestedTransactions {
        gateway
        parentTransaction { id }
        maximumRefundableSet { shopMoney { amount } }
      }
    }
  }
}
"""

REFUND_CREATE = """
mutation RefundCreate($input: RefundInput!) {
  refundCreate(input: $input) {
    refund { id }
    userErrors { field message }
  }
}
"""

RETURNABLE_FULFILLMENTS = """
query ReturnableFulfillments($orderId: ID!) {
  returnableFulfillments(orderId: $orderId, first: 5) {
    nodes {
      returnableFulfillmentLineItems(first: 20) {
        nodes { quantity fulfillmentLineItem { id } }
      }
    }
  }
}
"""

RETURN_REQUEST = """
mutation ReturnRequest($input: ReturnRequestInput!) {
  returnRequest(input: $input) {
    return { id name status }
    userErrors { field message }
  }
}
"""
