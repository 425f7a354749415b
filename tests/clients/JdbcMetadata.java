// pgJDBC's DatabaseMetaData against Sluice, as DBeaver, DataGrip and Metabase
// browse a database: schemas, tables and views, columns, primary keys,
// indexes, type info, keywords, and a prepared statement with typed
// parameters. Run by tests/clients.rs with `java -cp postgresql.jar`; exits
// non-zero on the first wrong answer.

import java.sql.*;
import java.util.*;

public class JdbcMetadata {
  static void check(String what, Object got, Object want) {
    if (!Objects.equals(got, want)) {
      System.err.println(what + ": got " + got + ", want " + want);
      System.exit(1);
    }
    System.out.println("ok: " + what);
  }

  /** The rows of a result set, each as the listed columns' text. */
  static List<List<String>> rows(ResultSet rs, String... columns) throws SQLException {
    List<List<String>> out = new ArrayList<>();
    try (rs) {
      while (rs.next()) {
        List<String> row = new ArrayList<>();
        for (String c : columns) row.add(rs.getString(c));
        out.add(row);
      }
    }
    return out;
  }

  public static void main(String[] args) throws Exception {
    String url = "jdbc:postgresql://127.0.0.1:" + System.getenv("SLUICE_PG_PORT") + "/sluice?user=sluice";
    try (Connection c = DriverManager.getConnection(url); Statement s = c.createStatement()) {
      s.execute("CREATE STREAM orders (id BIGINT KEY, customer VARCHAR, amount DOUBLE, ts TIMESTAMP) "
          + "WITH (kafka_topic='orders', partitions=1, value_format='json')");
      s.execute("CREATE TABLE per_customer AS SELECT customer, COUNT(*) AS n FROM orders GROUP BY customer");
      s.execute("CREATE VIEW big_orders AS SELECT id, amount FROM orders WHERE amount > 5");
      s.execute("INSERT INTO orders (id, customer, amount, ts) VALUES (1, 'ann', 10.5, '2024-01-01 00:00:00')");

      DatabaseMetaData md = c.getMetaData();
      check("product", md.getDatabaseProductName(), "PostgreSQL");
      check("schemas", rows(md.getSchemas(), "TABLE_SCHEM"),
          List.of(List.of("information_schema"), List.of("pg_catalog"), List.of("public")));
      check("catalogs", rows(md.getCatalogs(), "TABLE_CAT"), List.of(List.of("sluice")));
      check("tables and views",
          rows(md.getTables(null, "public", "%", new String[] {"TABLE", "VIEW"}), "TABLE_NAME", "TABLE_TYPE"),
          List.of(List.of("per_customer", "TABLE"), List.of("big_orders", "VIEW"), List.of("orders", "VIEW")));
      check("columns",
          rows(md.getColumns(null, "public", "orders", "%"), "COLUMN_NAME", "TYPE_NAME", "ORDINAL_POSITION"),
          List.of(List.of("id", "int8", "1"), List.of("customer", "text", "2"),
              List.of("amount", "float8", "3"), List.of("ts", "timestamp", "4")));
      check("primary key",
          rows(md.getPrimaryKeys(null, null, "per_customer"), "COLUMN_NAME", "KEY_SEQ", "PK_NAME"),
          List.of(List.of("customer", "1", "per_customer_pkey")));
      check("index info",
          rows(md.getIndexInfo(null, null, "per_customer", false, false), "INDEX_NAME", "NON_UNIQUE", "COLUMN_NAME"),
          List.of(List.of("per_customer_pkey", "f", "customer")));
      check("no foreign keys", rows(md.getImportedKeys(null, null, "per_customer"), "FKCOLUMN_NAME"), List.of());
      check("type info lists int8", rows(md.getTypeInfo(), "TYPE_NAME").contains(List.of("int8")), true);
      check("keywords", md.getSQLKeywords().isEmpty(), false);

      // A prepared statement with typed parameters (the extended protocol).
      try (PreparedStatement p = c.prepareStatement("SELECT customer, amount FROM orders WHERE ts >= ? AND id = ?")) {
        p.setTimestamp(1, Timestamp.valueOf("2023-06-01 00:00:00"));
        p.setLong(2, 1);
        check("prepared query", rows(p.executeQuery(), "customer", "amount"), List.of(List.of("ann", "10.5")));
      }
      try (ResultSet rs = s.executeQuery("SELECT * FROM big_orders")) {
        ResultSetMetaData r = rs.getMetaData();
        check("result metadata", List.of(r.getColumnName(1), r.getColumnTypeName(1), r.getColumnTypeName(2)),
            List.of("id", "int8", "float8"));
      }
    }
    System.out.println("done");
  }
}
